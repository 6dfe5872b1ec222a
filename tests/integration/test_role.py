"""ROLE trained in process: every row of its label estimates trained, saved and restored by a checkpoint."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning.data import SyntheticAmbiguityDataModule
from tests.helpers import TinyCNNModule, cpu_trainer


def _fit(tmp_path, max_epochs: int, ckpt_path: str | None = None, model=None):
    model = model or TinyCNNModule(num_classes=40, k=2, method="role", eval_ks=[2])
    data = SyntheticAmbiguityDataModule(train_size=96, val_size=40, test_size=40, batch_size=32)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = cpu_trainer(max_epochs=max_epochs, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def test_role_trains_every_row_and_its_estimates_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, _ = _fit(tmp_path, max_epochs=1)
    estimates = model.loss.estimates.logits.clone()
    assert estimates.shape == (96, 40) and bool(model.loss.estimates.seen.all())
    loaded = TinyCNNModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=False)
    assert torch.equal(loaded.loss.estimates.logits, estimates)
    assert torch.equal(loaded.loss.estimates.seen, model.loss.estimates.seen)
    # Resuming continues from the saved estimates (the rows change again in the second epoch).
    resumed, _ = _fit(tmp_path / "resumed", max_epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.loss.estimates.logits.shape == (96, 40)
    assert not torch.equal(resumed.loss.estimates.logits, estimates)
