"""``--ckpt_path``: the checkpoint is checked first, then its hyperparameters replace the model's arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from avgk_lightning.checkpoint import check_method, read_checkpoint

__all__ = ["NOT_IN_CHECKPOINT", "check_checkpoint_path", "reconcile_model_arguments"]

# Arguments taken from the command line even under --ckpt_path: the optimizer and scheduler factories
# (not saved in checkpoints) and the use-time choices of test and predict.
NOT_IN_CHECKPOINT = ("optimizer", "lr_scheduler", "predict_k", "frequency_boundaries")
# Arguments linked from the data module, not chosen by the user.
_LINKED = ("num_classes", "class_names", "class_counts")
# Lightning's own names for checkpoints it finds itself.
_SPECIAL_PATHS = ("last", "best", "hpc", "registry")


def _plain(value: Any) -> Any:
    """A config value as plain data, for comparisons (jsonargparse Namespaces to dicts)."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def check_checkpoint_path(ckpt_path: str | None) -> None:
    """A missing, truncated or foreign checkpoint file given as ``--ckpt_path`` ends in one clear error."""
    if ckpt_path is None or str(ckpt_path) in _SPECIAL_PATHS or str(ckpt_path).startswith("registry"):
        return
    read_checkpoint(Path(ckpt_path), argument="ckpt_path")


def reconcile_model_arguments(given: dict[str, Any], init_args: Any, ckpt_path: str) -> None:
    """After Lightning replaced the model's arguments by the checkpoint's: keep what must stay, say what changed.

    `given` are the arguments before the replacement. The optimizer, scheduler and use-time choices
    (:data:`NOT_IN_CHECKPOINT`) keep their command-line values; a different `method` is an error (the
    checkpoint's heads were trained for another loss); any other argument the checkpoint overrides is
    named in a warning, so nothing is dropped silently.
    """
    for name in NOT_IN_CHECKPOINT:
        if init_args is not None and name in given:
            setattr(init_args, name, given[name])
    after = dict(vars(init_args or {}))
    changed = {
        name: (given[name], after[name])
        for name in given
        if name not in _LINKED and name in after and _plain(given[name]) != _plain(after[name])
    }
    if "method" in changed:
        check_method(changed["method"][1], changed["method"][0], ckpt_path)
    if changed:
        rank_zero_warn(
            "--ckpt_path: the model's arguments come from the checkpoint's hyperparameters: "
            + ", ".join(f"{name}={new!r} (not {old!r})" for name, (old, new) in changed.items())
        )
