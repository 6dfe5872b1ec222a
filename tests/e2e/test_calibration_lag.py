"""Checkpoints written between two validations: their λ_K are the last validation's, their weights newer.

`fit` under ``--checkpoint.every_n_train_steps 4`` (10 training batches per epoch, 3 epochs) writes best.ckpt at
a training step after the validation that scored it, and the final weights (step 30) at no checkpointing step.
`fit` then validates the final weights and writes them to last.ckpt with their own λ_K; `test` of best.ckpt
calibrates λ_K for its weights before testing. Reference: λ_K by a full sort (``reference_threshold``) of the
validation scores of the checkpoint's weights.
"""

import logging

import pytest
import torch

from avgk_lightning import TwoHeadModule
from avgk_lightning.batch import Batch
from avgk_lightning.checkpoint import calibration_lag
from tests.helpers import checkpoint_of, cli_args, cli_in_process, reference_threshold

COMMON = [
    *cli_args(max_epochs=3, train_size=640, val_size=256, test_size=257, batch_size=64),
    "--model.init_args.backbone=small_resnet",
    "--trainer.logger=false",
    "--checkpoint.every_n_train_steps=4",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration_lag")
    cli_in_process(["fit", *COMMON, f"--trainer.default_root_dir={root}"])
    return root


def _validation_scores(model: TwoHeadModule, datamodule) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [
                model.network.scores(Batch.of(b).images, ["multilabel"])["multilabel"]
                for b in datamodule.val_dataloader()
            ]
        )


@pytest.mark.slow
def test_fit_writes_the_final_weights_to_last_ckpt_with_their_own_calibration(root):
    last = torch.load(checkpoint_of(root, "last.ckpt"), weights_only=True)
    assert last["global_step"] == 30  # the every-4-steps schedule alone would have left step 28 there
    assert last["average_k"]["calibrated_at_step"] == 30 and calibration_lag(last) is None


@pytest.mark.slow
def test_test_calibrates_a_lagging_checkpoint_for_its_weights_first(root, caplog):
    best = torch.load(checkpoint_of(root, "best.ckpt"), weights_only=True)
    lag = calibration_lag(best)
    assert lag is not None and lag[1] == best["global_step"] and lag[0] in (10, 20) and lag[0] < lag[1]
    with caplog.at_level(logging.INFO):
        cli = cli_in_process(
            ["test", *COMMON, f"--trainer.default_root_dir={root}", f"--ckpt_path={checkpoint_of(root, 'best.ckpt')}"]
        )
    assert f"after the validation at step {lag[0]} that calibrated its λ_K" in caplog.text
    assert cli.model.calibration.step == cli.model.calibration.weights_step == best["global_step"]
    scores = _validation_scores(cli.model, cli.datamodule)
    fresh = cli.model.calibration.threshold("multilabel", 2)
    assert fresh == pytest.approx(reference_threshold(scores.numpy(), 2), rel=1e-6)
    assert (scores >= fresh).sum(dim=1).float().mean().item() == pytest.approx(2, abs=0.01)
    stale = best["average_k"]["thresholds"]["multilabel"][2.0]  # the older weights' λ_K: not K on validation
    assert abs((scores >= stale).sum(dim=1).float().mean().item() - 2) > 0.1
    assert cli.trainer.callback_metrics["test/set_size@2"].item() == pytest.approx(2, abs=0.25)


@pytest.mark.slow
def test_predict_validates_a_checkpoint_without_validation_accuracies_first(root, tmp_path, caplog):
    # A checkpoint of release 0.2.0 records λ_K but no accuracy per head, which predict_head: validation compares.
    earlier = torch.load(checkpoint_of(root, "last.ckpt"), weights_only=False)
    del earlier["average_k"]["validation_accuracy"]
    earlier["hyper_parameters"].pop("predict_head")
    path = tmp_path / "earlier.ckpt"
    torch.save(earlier, path)
    output = tmp_path / "sets.jsonl"
    with caplog.at_level(logging.INFO):
        cli = cli_in_process(
            [
                "predict",
                *COMMON,
                f"--trainer.default_root_dir={root}",
                f"--ckpt_path={path}",
                f"--predictions.output={output}",
            ]
        )
    assert f"{path} records no validation accuracy per head" in caplog.text
    accuracy = cli.model.calibration.accuracy  # recorded by that validation: the final weights' own
    saved = torch.load(checkpoint_of(root, "last.ckpt"), weights_only=True)["average_k"]["validation_accuracy"]
    assert {head: values[2.0] for head, values in accuracy.items()} == pytest.approx(
        {head: values[2.0] for head, values in saved.items()}, abs=1e-6
    )
    assert len(output.read_text().splitlines()) == 257
