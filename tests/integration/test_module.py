"""TwoHeadModule trained by a Trainer: the warm-up, and the logged training accuracy."""

import pytest
import torch
from lightning.pytorch import Callback

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.errors import StaleCalibrationError
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd


class _HeadSnapshot(Callback):
    """Copies of the multi-label head's weights at the start of every training epoch, and at the end."""

    def __init__(self) -> None:
        self.weights = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.weights.append(pl_module.network.multilabel_head.weight.detach().clone())

    def on_train_end(self, trainer, pl_module):
        self.weights.append(pl_module.network.multilabel_head.weight.detach().clone())


def test_warmup_leaves_the_multilabel_head_untouched_until_pseudo_labels_start():
    model = TinyCNNModule(
        num_classes=40,
        k=2,
        loss_options={"warmup_epochs": 1},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    snapshot = _HeadSnapshot()
    trainer = cpu_trainer(max_epochs=2, callbacks=[PseudoLabelThreshold(), snapshot], limit_val_batches=1)
    trainer.fit(model, SyntheticAmbiguityDataModule(train_size=256, val_size=64, test_size=64, batch_size=64))
    start, after_warmup, end = snapshot.weights
    assert torch.equal(start, after_warmup) and not torch.equal(after_warmup, end)


@pytest.mark.parametrize("method, head", [("two_head", "softmax"), ("an", "multilabel")])
def test_train_top1_accuracy_is_the_accuracy_on_the_training_labels(method, head):
    torch.manual_seed(0)
    model = TinyCNNModule(num_classes=40, k=2, method=method, optimizer=frozen_sgd)
    data = SyntheticAmbiguityDataModule(train_size=300, val_size=64, test_size=64, batch_size=64)
    trainer = cpu_trainer(max_epochs=1, callbacks=[PseudoLabelThreshold()], limit_val_batches=1)
    trainer.fit(model, data)
    images, targets, _ = data.train_dataset.tensors
    with torch.no_grad():  # the frozen model (lr 0, no batch norm) scores every training image the same way
        logits = dict(zip(("softmax", "multilabel"), model(images)))[head]
    expected = (logits.argmax(dim=1) == targets).float().mean().item()
    assert trainer.callback_metrics["train/top1_acc"].item() == pytest.approx(expected, abs=1e-6)


def test_weights_trained_after_the_last_validation_are_not_tested_with_its_thresholds(tmp_path):
    # Validation every second epoch, 3 epochs of 3 batches: λ_K of step 6, weights of step 9.
    data = SyntheticAmbiguityDataModule(train_size=192, val_size=101, test_size=101, batch_size=64)
    model = TinyCNNModule(num_classes=40, k=2)
    trainer = cpu_trainer(
        default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold()], max_epochs=3, check_val_every_n_epoch=2
    )
    trainer.fit(model, data)
    assert (model.calibration.step, model.calibration.weights_step) == (6, 9)
    with pytest.raises(StaleCalibrationError, match="calibrated on validation at training step 6, but the weights are"):
        trainer.test(model, data)
    with pytest.raises(StaleCalibrationError):
        model.calibrated_threshold()  # what predict and the exports use
    trainer.validate(model, data)
    assert model.calibration.step == 9
    (metrics,) = trainer.test(model, data)
    assert metrics["test/set_size@2"] == pytest.approx(2, abs=0.3)


def test_a_training_resumes_only_with_the_loss_options_it_began_with(tmp_path):
    # One epoch with the summed BCE, then `fit --ckpt_path` under the default (averaged): refused, naming the fix.
    data = SyntheticAmbiguityDataModule(train_size=128, val_size=101, test_size=101, batch_size=64)
    summed = {"bce_reduction": "sum"}
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold()], max_epochs=1)
    trainer.fit(TinyCNNModule(num_classes=40, k=2, loss_options=summed), data)
    path = tmp_path / "one_epoch.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["average_k"]["loss_options"] == {
        "mu": 1.0,
        "bce_reduction": "sum",
        "warmup_epochs": 0,
    }
    fix = "pass --model.init_args.loss_options '{bce_reduction: sum}'"
    with pytest.raises(
        ValueError, match=f"ran with bce_reduction='sum', but this run's loss has bce_reduction='mean'.*{fix}"
    ):
        cpu_trainer(max_epochs=2, callbacks=[PseudoLabelThreshold()]).fit(
            TinyCNNModule(num_classes=40, k=2), data, ckpt_path=path
        )
    resumed = cpu_trainer(max_epochs=2, callbacks=[PseudoLabelThreshold()])
    resumed.fit(TinyCNNModule(num_classes=40, k=2, loss_options=summed), data, ckpt_path=path)
    assert resumed.current_epoch == 2
    model = TinyCNNModule.load_from_checkpoint(path, weights_only=False)  # loading to predict or test: no check
    assert model.loss.bce_reduction == "sum"
