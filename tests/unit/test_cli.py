"""The CLI without training: run directories, every shipped config parses, the reference recipes' optimizers."""

import pytest
import torch
import yaml

from avgk_lightning.cli import new_run_dir
from tests.fixtures import write_fake_cifar100
from tests.helpers import ROOT, cli_in_process


def test_new_run_dir_never_reuses_a_directory(tmp_path):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_1").mkdir()
    assert new_run_dir(tmp_path) == tmp_path / "version_2"


@pytest.mark.parametrize("config", sorted(path.name for path in (ROOT / "configs").glob("*.yaml")))
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process(["fit", "--config", str(ROOT / "configs" / config), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: avgk_lightning" in capsys.readouterr().out


@pytest.mark.parametrize("group", ["checkpoint", "last_checkpoint"])
def test_save_last_is_refused_naming_the_argument_and_the_fix(group, tmp_path, capsys):
    config = str(ROOT / "configs" / "synthetic_two_head.yaml")
    args = ["fit", "--config", config, f"--{group}.save_last=true", f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"error: --{group}.save_last is not used by train.py" in error
    assert f"Remove {group}.save_last from the config" in error


def _epoch_rates(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> list[float]:
    """The learning rate of each 0-based epoch when the scheduler steps at every epoch's end (interval "epoch")."""
    rates = []
    for _ in range(epochs):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("method", ["two_head", "softmax"])
def test_cifar100_densenet_recipe_has_the_rates_of_the_reference_code(method, tmp_path):
    write_fake_cifar100(tmp_path / "data")
    arguments = [
        f"--config={ROOT / 'configs' / f'cifar100_densenet40_{method}.yaml'}",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.val_size=100",
        "--data.init_args.verify_checksums=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.logger=false",
    ]
    cli = cli_in_process(arguments, run=False)
    optimizers = cli.model.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]
    assert scheduler["interval"] == "epoch" and cli.trainer.max_epochs == 300 and cli.datamodule.batch_size == 64
    assert {name: optimizer.defaults[name] for name in ("momentum", "nesterov", "weight_decay")} == {
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
    }
    # garcinc/noised-topk, experiments/utils.py: the rate is multiplied by 0.1 at the start of every 0-based epoch
    # listed in --lr_decay (151 226), from --lr 0.1
    reference = [0.1 * 0.1 ** sum(epoch >= decay for decay in (151, 226)) for epoch in range(300)]
    assert _epoch_rates(scheduler["scheduler"], 300) == pytest.approx(reference, rel=1e-9)
    assert cli.model.network.softmax_head.in_features == 440 and not cli.model.hparams.small_input_stem


@pytest.mark.parametrize("config", sorted(path.name for path in (ROOT / "configs").glob("[cp]*.yaml")))
def test_the_reference_recipes_use_nesterov_sgd_and_the_resnet18_substitute_keeps_its_momentum(config):
    optimizer = yaml.safe_load((ROOT / "configs" / config).read_text())["model"]["init_args"]["optimizer"]
    substitute = config.startswith("cifar100_resnet18")  # unchanged until a run compares the two
    assert optimizer["class_path"] == "torch.optim.SGD"
    assert optimizer["init_args"].get("nesterov", False) is (not substitute)
