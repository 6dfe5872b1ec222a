"""The callbacks in training: PseudoLabelThreshold (epoch and batch scope, resume), the non-finite loss stop, and
BestAndLastCheckpoint."""

import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.callbacks import BestAndLastCheckpoint
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.errors import NonFiniteLossError
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd


def _frozen_module(**kwargs):
    return TinyCNNModule(num_classes=40, k=3, optimizer=frozen_sgd, **kwargs)


def _data():
    return SyntheticAmbiguityDataModule(train_size=600, val_size=101, test_size=101, batch_size=64)


class ThresholdProbe(Callback):
    """Records the pseudo-label threshold the module uses in each epoch."""

    def __init__(self):
        self.thresholds = []

    def on_train_epoch_start(self, trainer, pl_module):
        rule = pl_module.pseudo_label_rule
        self.thresholds.append(None if rule is None else rule.threshold)


def test_epoch_scope_with_frozen_model_realises_k_in_the_next_epoch(tmp_path):
    probe = ThresholdProbe()
    model = _frozen_module()
    trainer = cpu_trainer(
        default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold("epoch"), probe], max_epochs=2, limit_val_batches=0
    )
    trainer.fit(model, _data())
    assert probe.thresholds[0] is None  # first epoch: batch rule
    assert probe.thresholds[1] == pytest.approx(trainer.callback_metrics["train/pseudo_label_threshold"].item())
    realised = trainer.callback_metrics["train/pseudo_label_set_size"].item()
    assert abs(realised - 3) / 3 < 0.01


def test_batch_scope_keeps_the_batch_rule(tmp_path):
    probe = ThresholdProbe()
    trainer = cpu_trainer(
        default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold("batch"), probe], max_epochs=2, limit_val_batches=0
    )
    trainer.fit(_frozen_module(), _data())
    assert probe.thresholds == [None, None]
    # every batch has exactly round(B (K - 1)) non-true positives: 9 batches of 64 and one of 24
    assert trainer.callback_metrics["train/pseudo_label_set_size"].item() == pytest.approx(1 + (9 * 128 + 48) / 600)


def test_softmax_method_is_left_alone(tmp_path):
    probe = ThresholdProbe()
    trainer = cpu_trainer(
        default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold(), probe], max_epochs=1, limit_val_batches=0
    )
    trainer.fit(_frozen_module(method="softmax"), _data())
    assert "train/pseudo_label_set_size" not in trainer.callback_metrics


def test_threshold_is_checkpointed_and_restored_on_resume(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = PseudoLabelThreshold()
    trainer = cpu_trainer(
        default_root_dir=tmp_path,
        callbacks=[first, checkpoint],
        enable_checkpointing=True,
        max_epochs=1,
        limit_val_batches=0,
    )
    trainer.fit(_frozen_module(), _data())
    assert first.threshold is not None
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["callbacks"]["PseudoLabelThreshold"]["threshold"] == first.threshold
    resumed, probe = PseudoLabelThreshold(), ThresholdProbe()
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=[resumed, probe], max_epochs=2, limit_val_batches=0)
    trainer.fit(_frozen_module(), _data(), ckpt_path=tmp_path / "last.ckpt")
    assert probe.thresholds == [first.threshold]


def test_module_without_the_callback_warns_and_uses_the_batch_rule(tmp_path):
    with pytest.warns(UserWarning, match="No PseudoLabelThreshold callback"):
        cpu_trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0).fit(
            _frozen_module(), _data()
        )


class PoisonImagesAtEpoch(Callback):
    """Puts NaN into every training image when epoch `epoch` starts."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.datamodule.train_dataset.tensors[0].fill_(float("nan"))


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = TinyCNNModule(num_classes=40, k=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    callbacks = [PseudoLabelThreshold(), checkpoint, PoisonImagesAtEpoch(1)]
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=callbacks, enable_checkpointing=True, max_epochs=3)
    with pytest.raises(NonFiniteLossError, match="loss is nan at global step 10 \\(epoch 1, batch index 0\\)"):
        trainer.fit(model, _data())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and all(torch.isfinite(value).all() for value in saved["state_dict"].values())


class _DecliningScore(LightningModule):
    """A model whose validation score falls every epoch: its best epoch is the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_last_checkpoint_is_the_latest_epoch_when_the_best_is_older(tmp_path):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    checkpoint = BestAndLastCheckpoint(dirpath=tmp_path, monitor="score", mode="max", filename="best", save_last=True)
    trainer = cpu_trainer(max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(_DecliningScore(), loader, loader)
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 2
    assert checkpoint.last_model_path == str(tmp_path / "last.ckpt")


class BreakWeightsAtEpochEnd(Callback):
    """Puts an infinite value into one weight after the last training step of epoch `epoch` (a diverging update)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx + 1 == trainer.num_training_batches:
            with torch.no_grad():
                pl_module.network.softmax_head.bias[0] = float("inf")


def test_diverged_weights_are_never_written_as_best_or_last(tmp_path):
    model = TinyCNNModule(num_classes=40, k=3)
    checkpoint = BestAndLastCheckpoint(dirpath=tmp_path, save_last=True, monitor="val/avgk_acc@3", mode="max")
    callbacks = [PseudoLabelThreshold(), checkpoint, BreakWeightsAtEpochEnd(1)]
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=callbacks, enable_checkpointing=True, max_epochs=3)
    with pytest.raises(NonFiniteLossError, match="weights hold NaN or infinite values \\(network.softmax_head.bias\\)"):
        trainer.fit(model, _data())
    for path in tmp_path.glob("*.ckpt"):
        saved = torch.load(path, weights_only=True)
        assert saved["epoch"] == 0 and all(torch.isfinite(value).all() for value in saved["state_dict"].values())
    assert {path.name for path in tmp_path.glob("*.ckpt")} >= {"last.ckpt"}
