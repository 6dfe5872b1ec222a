"""The checkpoint format: unreadable and foreign files end in one error line; earlier checkpoints still load."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning.checkpoint import read_checkpoint
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.errors import InvalidInputError, MissingFileError
from avgk_lightning.export import main as export_main
from tests.helpers import ROOT, TinyCNNModule, cli_in_process, cpu_trainer

CONFIG = str(ROOT / "configs" / "synthetic_two_head.yaml")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real `fit` checkpoint of a ROLE model (per-sample label estimates) and its module."""
    root = tmp_path_factory.mktemp("checkpoint")
    data = SyntheticAmbiguityDataModule(train_size=96, val_size=64, test_size=64, batch_size=32)
    model = TinyCNNModule(num_classes=data.num_classes, method="role", k=2, width=8)
    checkpoint = ModelCheckpoint(dirpath=root, filename="best")
    trainer = cpu_trainer(max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(model, data)
    return Path(checkpoint.best_model_path), model


def _truncated(path: Path, directory: Path) -> Path:
    copy = directory / "truncated.ckpt"
    copy.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return copy


def test_a_truncated_or_foreign_file_is_named_in_one_error(saved, tmp_path):
    path, _ = saved
    assert "average_k" in read_checkpoint(path)  # the real one reads
    truncated = _truncated(path, tmp_path)
    with pytest.raises(InvalidInputError, match=f"Cannot read checkpoint {truncated} .*truncated or corrupt"):
        read_checkpoint(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InvalidInputError, match=f"{foreign} \\(argument `ckpt_path`\\) is not a checkpoint of avgk"):
        read_checkpoint(foreign)
    with pytest.raises(MissingFileError, match="Checkpoint not found"):
        read_checkpoint(tmp_path / "nowhere.ckpt")


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_the_cli_prints_one_error_line_for_a_truncated_checkpoint(saved, tmp_path, capsys, subcommand):
    truncated = _truncated(saved[0], tmp_path)
    args = [subcommand, "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={truncated}"]
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process(args)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert error.startswith(f"error: Cannot read checkpoint {truncated} (argument `ckpt_path`)")
    assert len(error.splitlines()) == 1


def test_export_refuses_a_truncated_checkpoint_with_one_line(saved, tmp_path, capsys):
    truncated = _truncated(saved[0], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(truncated), "--output", str(tmp_path / "p.pt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: Cannot read checkpoint {truncated} (argument `checkpoint`)")


def test_a_checkpoint_of_the_earlier_format_loads_unchanged(saved):
    """Before models.TwoHeadNetwork the weights had no `network.` prefix and ROLE's state was flat."""
    path, model = saved
    current = torch.load(path, weights_only=True)
    earlier = dict(current)
    earlier["state_dict"] = {key.removeprefix("network."): value for key, value in current["state_dict"].items()}
    earlier["average_k"] = dict(current["average_k"], loss_state=current["average_k"]["loss_state"]["label_estimates"])
    assert any(key.startswith("backbone.") for key in earlier["state_dict"])
    loaded = TinyCNNModule(num_classes=model.num_classes, method="role", k=2, width=8)
    loaded.on_load_checkpoint(earlier)
    loaded.load_state_dict(earlier["state_dict"])
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.loss.estimates.logits, model.loss.estimates.logits.cpu())
    assert loaded.calibration == model.calibration and loaded.calibration.average_k


def test_the_checkpoint_holds_the_calibration_and_the_epoch_states(saved):
    path, model = saved
    entry = torch.load(path, weights_only=True)["average_k"]
    assert entry["method"] == "role" and entry["num_classes"] == model.num_classes
    assert entry["thresholds"] == model.calibration.average_k
    assert torch.equal(entry["loss_state"]["label_estimates"]["estimate_logits"], model.loss.estimates.logits)
