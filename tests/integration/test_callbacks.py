"""The callbacks in training: PseudoLabelThreshold (epoch and batch scope, resume), the non-finite loss stop, and
the CLI's best.ckpt and last.ckpt (two stock ModelCheckpoints)."""

import warnings

import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import FashionMNISTDataModule, SyntheticAmbiguityDataModule
from avgk_lightning.errors import NonFiniteLossError
from tests.fixtures import write_fake_fashion_mnist
from tests.helpers import TinyCNNModule, cli_args, cli_in_process, cpu_trainer, frozen_sgd


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
    """A model whose validation score (the CLI's monitor for K = 2) falls every epoch: its best epoch is the first."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/avgk_acc@2", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _cli_checkpoints(root, k=2):
    """The ModelCheckpoints of best.ckpt and last.ckpt exactly as `train.py fit` configures them (run dir in `root`)."""
    cli = cli_in_process([*cli_args(), f"--model.init_args.k={k}", f"--trainer.default_root_dir={root}"], run=False)
    callbacks = cli.checkpoint_callbacks()
    assert all(type(callback) is ModelCheckpoint for callback in callbacks.values())  # stock callbacks
    return callbacks


@pytest.mark.parametrize("check_val_every_n_epoch", [1, 2])
def test_last_checkpoint_is_the_latest_epoch_when_the_best_is_older(tmp_path, check_val_every_n_epoch):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    callbacks = _cli_checkpoints(tmp_path)
    trainer = cpu_trainer(
        max_epochs=4,
        callbacks=list(callbacks.values()),
        enable_checkpointing=True,
        check_val_every_n_epoch=check_val_every_n_epoch,
    )
    trainer.fit(_DecliningScore(), loader, loader)
    directory = tmp_path / "version_0" / "checkpoints"
    assert sorted(path.name for path in directory.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(directory / "best.ckpt", weights_only=True)["epoch"] == check_val_every_n_epoch - 1
    assert torch.load(directory / "last.ckpt", weights_only=True)["epoch"] == 3
    assert callbacks["best"].best_model_path == str(directory / "best.ckpt")
    assert callbacks["last"].best_model_path == str(directory / "last.ckpt")


def test_a_resumed_run_keeps_writing_best_and_last_in_place(tmp_path):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    first = _cli_checkpoints(tmp_path)
    cpu_trainer(max_epochs=2, callbacks=list(first.values()), enable_checkpointing=True).fit(
        _DecliningScore(), loader, loader
    )
    resumed = _cli_checkpoints(tmp_path)  # a new run dir: point both at the first run's, as `fit --ckpt_path last`
    for name, callback in resumed.items():
        callback.dirpath = first[name].dirpath
    directory = tmp_path / "version_0" / "checkpoints"
    cpu_trainer(max_epochs=4, callbacks=list(resumed.values()), enable_checkpointing=True).fit(
        _DecliningScore(), loader, loader, ckpt_path=directory / "last.ckpt"
    )
    assert sorted(path.name for path in directory.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1, last-v1
    assert torch.load(directory / "best.ckpt", weights_only=True)["epoch"] == 0  # the restored best score held
    assert torch.load(directory / "last.ckpt", weights_only=True)["epoch"] == 3


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
    checkpoints = _cli_checkpoints(tmp_path, k=3)
    callbacks = [PseudoLabelThreshold(), *checkpoints.values(), BreakWeightsAtEpochEnd(1)]
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=callbacks, enable_checkpointing=True, max_epochs=3)
    with pytest.raises(NonFiniteLossError, match="weights hold NaN or infinite values \\(network.softmax_head.bias\\)"):
        trainer.fit(model, _data())
    directory = tmp_path / "version_0" / "checkpoints"
    for path in directory.glob("*.ckpt"):
        saved = torch.load(path, weights_only=True)
        assert saved["epoch"] == 0 and all(torch.isfinite(value).all() for value in saved["state_dict"].values())
    assert {path.name for path in directory.glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}


def test_the_epoch_statistics_are_logged_without_lightnings_batch_size_guess(tmp_path):
    # Fashion-MNIST's in-memory batches make Lightning's batch-size inference ambiguous when a log call
    # gives none; 250 training images in batches of 64 end the epoch on a batch of 58.
    write_fake_fashion_mnist(tmp_path, train_per_class=40)
    data = FashionMNISTDataModule(tmp_path, train_size=250, val_size=50, batch_size=64, noise=0.4, augment=False)
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold()], max_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyCNNModule(num_classes=10, k=2, optimizer=frozen_sgd), data)
    assert [str(w.message) for w in caught if "batch_size" in str(w.message)] == []
    # a frozen network without batch norm, images not augmented: epoch 1 realises the K of epoch 0's threshold
    assert trainer.callback_metrics["train/pseudo_label_set_size"].item() == pytest.approx(2, abs=0.01)
