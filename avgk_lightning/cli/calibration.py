"""λ_K that belong to the weights they are used with, for ``train.py test``, ``predict`` and ``fit``'s last.ckpt.

A checkpoint written between two validations (``--checkpoint.every_n_train_steps``,
``--trainer.val_check_interval``, ``--trainer.check_val_every_n_epoch``, a stop by SIGTERM) holds the λ_K of
the last validation beside newer weights (:func:`avgk_lightning.checkpoint.calibration_lag`). ``test`` and
``predict`` validate such a checkpoint first, which calibrates λ_K for its weights, and ``fit`` validates final
weights that no validation has seen before it writes them to last.ckpt once more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from avgk_lightning.checkpoint import CHECKPOINT_KEY, calibration_lag, read_checkpoint
from avgk_lightning.module import TwoHeadModule

__all__ = ["calibrated_for_the_checkpoint", "validate_final_weights"]


def calibrated_for_the_checkpoint(trainer: Trainer, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``Trainer.test`` / ``predict``, after λ_K were calibrated for a lagging checkpoint's weights.

    Where ``ckpt_path`` is a checkpoint whose λ_K are older than its weights, or, for ``predict_head:
    validation``, one that does not record each head's validation accuracy (an earlier release's), the
    checkpoint is loaded and validated (which calibrates λ_K on the validation split and records the
    accuracies) and the returned arguments test the loaded model as it is (no ``ckpt_path``); otherwise
    `arguments` are returned unchanged.
    """
    path = arguments.get("ckpt_path")
    if path is None or not Path(path).is_file():
        return arguments
    checkpoint = read_checkpoint(path)
    lag = calibration_lag(checkpoint)
    if lag is not None:
        rank_zero_info(
            f"{path} was written at training step {lag[1]}, after the validation at step {lag[0]} that calibrated "
            "its λ_K (between two validations): validating it first, so that λ_K are calibrated for its weights."
        )
    elif arguments["model"].predict_head == "validation" and not checkpoint.get(CHECKPOINT_KEY, {}).get(
        "validation_accuracy"
    ):
        rank_zero_info(
            f"{path} records no validation accuracy per head (an earlier release wrote it), which predict_head "
            "validation compares: validating it first."
        )
    else:
        return arguments
    trainer.validate(arguments["model"], datamodule=arguments.get("datamodule"), ckpt_path=path, verbose=False)
    return {**arguments, "ckpt_path": None}


def validate_final_weights(
    trainer: Trainer, model: TwoHeadModule, datamodule: LightningDataModule | None, last: ModelCheckpoint
) -> None:
    """After ``fit``: write the final state to last.ckpt where it is not there, validated first where needed.

    Under ``every_n_train_steps`` or ``check_val_every_n_epoch`` the last checkpoint of a run can hold older
    weights than the final ones, or the λ_K of an earlier validation (a checkpoint at the epoch's last
    training step is written before that epoch's validation). Final weights that no validation has seen are
    validated (which calibrates λ_K for them) before they are written. Nothing happens where
    last.ckpt already holds the final state, or where none is kept (``save_top_k: 0``).
    """
    if last.save_top_k == 0:
        return
    path = last.format_checkpoint_name({})
    final = trainer.strategy.broadcast(
        trainer.is_global_zero and _holds_step_and_its_own_calibration(path, trainer.global_step)
    )
    if final and model.calibration.is_current():
        return
    calibration = model.calibration
    if not calibration.is_current():
        rank_zero_info(
            f"The final weights (training step {calibration.weights_step}) were not validated (the last validation "
            f"was at step {calibration.step}): validating them, then writing them with their λ_K to {path}."
        )
        trainer.validate(model, datamodule=datamodule, verbose=False)
    else:
        rank_zero_info(
            f"Writing the final weights (training step {trainer.global_step}) with the λ_K of their validation to "
            f"{path}."
        )
    trainer.save_checkpoint(path)


def _holds_step_and_its_own_calibration(path: str, step: int) -> bool:
    """Whether the checkpoint at `path` exists, holds the weights of training step `step` and their own λ_K."""
    if not Path(path).is_file():
        return False
    checkpoint = read_checkpoint(path, argument="last_checkpoint")
    return checkpoint["global_step"] == step and calibration_lag(checkpoint) is None
