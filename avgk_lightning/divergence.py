"""Training that diverges stops with one message naming the step and the last good checkpoint, never saving NaN."""

from __future__ import annotations

import os
from collections.abc import Mapping

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from avgk_lightning.errors import NonFiniteLossError

__all__ = ["attached_trainer", "check_finite_loss", "check_finite_weights", "last_good_checkpoint"]


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer `module` is attached to, or None (``LightningModule.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def last_good_checkpoint(trainer: Trainer | None) -> str:
    """The newest file the trainer's checkpoint callbacks wrote (``"no checkpoint yet"`` before any)."""
    callbacks = trainer.checkpoint_callbacks if trainer is not None else []
    saved = [
        path for c in callbacks for path in (c.last_model_path, c.best_model_path) if path and os.path.isfile(path)
    ]
    return max(saved, key=os.path.getmtime) if saved else "no checkpoint yet"


def check_finite_loss(loss: Tensor, module: LightningModule, batch_idx: int) -> None:
    """Stop before an update from a NaN or infinite training loss, naming the batch and the last good weights."""
    if not loss.isfinite():
        raise NonFiniteLossError(
            f"The training loss is {float(loss)} at global step {module.global_step} (epoch {module.current_epoch}, "
            f"batch index {batch_idx}): training stopped before this update. The last good weights are in "
            f"{last_good_checkpoint(attached_trainer(module))}. Lower the learning rate, or check this batch's data."
        )


def check_finite_weights(state_dict: Mapping[str, Tensor], module: LightningModule) -> None:
    """Refuse to checkpoint diverged weights (the loss check sees them one step late)."""
    broken = [name for name, value in state_dict.items() if value.is_floating_point() and not value.isfinite().all()]
    if broken:
        raise NonFiniteLossError(
            f"The weights hold NaN or infinite values ({broken[0]}) at global step {module.global_step} (epoch "
            f"{module.current_epoch}): training stopped and no checkpoint of them was written. The last good "
            f"weights are in {last_good_checkpoint(attached_trainer(module))}. Lower the learning rate, or check "
            "the data."
        )
