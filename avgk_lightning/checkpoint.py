"""The checkpoint format of avgk-lightning and its compatibility rules, shared by the module, the CLI and export.

Besides Lightning's own entries, a checkpoint holds under ``"average_k"``: the number of classes, the
training `method`, the K of the multi-label heads (``trained_ks``: one head per K), the λ_K and coverage
thresholds calibrated on validation (per head and K) with the training step of the weights they were
calibrated on (``calibrated_at_step``; a checkpoint written between two validations holds older ones than
its ``global_step``), the per-epoch training state of the loss
(:meth:`~avgk_lightning.losses.AverageKLoss.epoch_states`) and the random generator states
(:mod:`avgk_lightning.resume`). Everything loads with ``weights_only=True``.

A checkpoint is refused, with one message naming the file or the argument, when it cannot be read
(missing, truncated, corrupt), is not one of ours, or was trained for another data set, method or list of K.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from avgk_lightning.errors import InvalidInputError, MissingFileError
from avgk_lightning.naming import format_k
from avgk_lightning.resume import collect_rng_states, restore_rng_states

if TYPE_CHECKING:
    from avgk_lightning.evaluation import Calibration
    from avgk_lightning.losses import AverageKLoss

__all__ = [
    "CHECKPOINT_KEY",
    "calibration_lag",
    "check_compatible",
    "check_method",
    "check_resumed_loss",
    "check_trained_ks",
    "load",
    "read_checkpoint",
    "save",
    "upgrade",
]

CHECKPOINT_KEY = "average_k"
# Prefixes of the network's weights: the module held backbone and heads directly before models.TwoHeadNetwork.
_NETWORK_PREFIXES = ("backbone.", "softmax_head.", "multilabel_head.")
# The callback state key of best.ckpt's ModelCheckpoint subclass before stock callbacks kept best.ckpt and last.ckpt.
_BEST_AND_LAST = "BestAndLastCheckpoint"


def read_checkpoint(path: str | Path, argument: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at `path`, memory-mapped (cheap even for large files), or one clear error.

    Raises :class:`~avgk_lightning.errors.MissingFileError` when the file is missing and
    :class:`~avgk_lightning.errors.InvalidInputError` when it is truncated, corrupt, or not a checkpoint of
    avgk-lightning (a `fit` run's ``best.ckpt`` / ``last.ckpt``); `argument` names the argument that gave it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"Checkpoint not found: {path} (argument `{argument}`). Pass a `fit` run's best.ckpt or last.ckpt."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidInputError(
            f"Cannot read checkpoint {path} (argument `{argument}`): {reason}. The file is truncated or corrupt "
            "(e.g. a copy that did not finish, or a run killed while saving): use another checkpoint of the run, "
            "such as best.ckpt or last.ckpt."
        ) from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise InvalidInputError(
            f"{path} (argument `{argument}`) is not a checkpoint of avgk-lightning: it has no "
            f"{CHECKPOINT_KEY!r} entry. Pass the best.ckpt or last.ckpt of a `train.py fit` run."
        )
    return checkpoint


def calibration_lag(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """(step calibrated, step of the weights) of a checkpoint whose λ_K are older than its weights, else None.

    Example:
        >>> calibration_lag({"global_step": 30, CHECKPOINT_KEY: {"calibrated_at_step": 20}})
        (20, 30)
    """
    calibrated, weights = checkpoint[CHECKPOINT_KEY].get("calibrated_at_step"), checkpoint.get("global_step")
    return None if calibrated is None or weights is None or calibrated == weights else (calibrated, weights)


def check_method(saved: str, asked: str, path: str | Path | None = None) -> None:
    """Refuse a checkpoint trained with another `method`: its heads were trained for another loss."""
    if saved != asked:
        source = "The checkpoint" if path is None else f"The checkpoint {path}"
        raise InvalidInputError(
            f"{source} was trained with method={saved!r}, but method={asked!r} was asked: pass "
            f"--model.init_args.method {saved} or a checkpoint of that method."
        )


def check_trained_ks(saved: list[float] | None, asked: tuple[float, ...]) -> None:
    """Refuse a checkpoint whose multi-label heads were trained for other K than the model's (one head per K).

    Models of one K keep loading each other's checkpoints (their one head is evaluated at every K); a
    checkpoint without the entry (written before multi-K models existed) has one head.

    Example:
        >>> check_trained_ks([2.0, 3.0], (2.0,))
        Traceback (most recent call last):
        ...
        avgk_lightning.errors.InvalidInputError: The checkpoint has a multi-label head for each K = 2, 3, but the model asks for K = 2 (argument `k`): pass --model.init_args.k [2,3], or a checkpoint trained for these K.
    """
    saved_ks = None if saved is None else tuple(float(k) for k in saved)
    if len(asked) == 1 and (saved_ks is None or len(saved_ks) == 1) or saved_ks == tuple(asked):
        return
    trained = (
        "one multi-label head"
        if saved_ks is None
        else f"a multi-label head for each K = {', '.join(map(format_k, saved_ks))}"
    )
    fix = "one number" if saved_ks is None or len(saved_ks) == 1 else "[" + ",".join(map(format_k, saved_ks)) + "]"
    raise InvalidInputError(
        f"The checkpoint has {trained}, but the model asks for K = {', '.join(map(format_k, asked))} (argument "
        f"`k`): pass --model.init_args.k {fix}, or a checkpoint trained for these K."
    )


def check_compatible(checkpoint: dict[str, Any], num_classes: int, class_names: list[str] | None, method: str) -> None:
    """Refuse a checkpoint of another data set (classes) or another method, naming the difference."""
    saved = checkpoint[CHECKPOINT_KEY]
    if saved["num_classes"] != num_classes:
        raise InvalidInputError(
            f"The checkpoint was trained with num_classes={saved['num_classes']}, but the model has "
            f"num_classes={num_classes}: use the data set the checkpoint was trained on."
        )
    saved_names = checkpoint.get("hyper_parameters", {}).get("class_names")
    if saved_names is not None and class_names is not None and list(saved_names) != class_names:
        differing = next(i for i, (a, b) in enumerate(zip(saved_names, class_names)) if a != b)
        raise InvalidInputError(
            f"The checkpoint was trained on other classes: class {differing} is {saved_names[differing]!r} "
            f"there and {class_names[differing]!r} in this data set. Use the data set it was trained on."
        )
    check_method(saved["method"], method)


def upgrade(checkpoint: dict[str, Any]) -> None:
    """Bring a checkpoint of an earlier release to the current format, in place.

    The network's weights moved under ``network.`` (``backbone.*`` is now ``network.backbone.*``), and
    ROLE's label estimates are saved as a named per-epoch state, and the state of ``best.ckpt``'s callback,
    once a ModelCheckpoint subclass, is a stock ``ModelCheckpoint``'s (so a resumed run keeps its best score).
    """
    state_dict = checkpoint.get("state_dict")
    if state_dict is not None and any(key.startswith(_NETWORK_PREFIXES) for key in state_dict):
        for key in [key for key in state_dict if key.startswith(_NETWORK_PREFIXES)]:
            state_dict[f"network.{key}"] = state_dict.pop(key)
    callbacks = checkpoint.get("callbacks", {})
    for key in [key for key in callbacks if key.startswith(_BEST_AND_LAST)]:
        callbacks["ModelCheckpoint" + key.removeprefix(_BEST_AND_LAST)] = callbacks.pop(key)
    saved = checkpoint.get(CHECKPOINT_KEY, {})
    loss_state = saved.get("loss_state", {})
    if "estimate_logits" in loss_state:
        saved["loss_state"] = {"label_estimates": loss_state}


def save(
    checkpoint: dict[str, Any],
    num_classes: int,
    method: str,
    calibration: Calibration,
    loss: AverageKLoss,
    trained_ks: tuple[float, ...],
) -> None:
    """Add the ``"average_k"`` entry of the module to a checkpoint Lightning is saving."""
    checkpoint[CHECKPOINT_KEY] = {
        "num_classes": num_classes,
        "method": method,
        "trained_ks": list(trained_ks),
        **calibration.state_dict(),
        "rng_states": collect_rng_states(),
        "loss_state": {name: state.state_dict() for name, state in loss.epoch_states().items()},
        "loss_options": loss.options(),
    }


def check_resumed_loss(checkpoint: dict[str, Any], options: dict[str, Any]) -> str | None:
    """Refuse to resume a training with other loss options than the checkpoint's (a default that changed, say).

    `options` are the resumed loss's (:meth:`~avgk_lightning.losses.AverageKLoss.options`). Returns a
    warning for a two-head checkpoint of an earlier release, which does not record them, else None.

    Example:
        >>> check_resumed_loss({"average_k": {"loss_options": {"mu": 1.0, "bce_reduction": "sum"}}},
        ...                    {"mu": 1.0, "bce_reduction": "mean"})
        Traceback (most recent call last):
        ...
        avgk_lightning.errors.InvalidInputError: The checkpoint's training ran with bce_reduction='sum', but this run's loss has bce_reduction='mean': to resume it as it began, pass --model.init_args.loss_options '{bce_reduction: sum}' (or start a new run, without --ckpt_path).
    """
    saved = checkpoint.get(CHECKPOINT_KEY, {}).get("loss_options")
    if saved is None:
        if "bce_reduction" not in options:
            return None
        return (
            "The checkpoint does not record its loss options (an earlier release wrote it, and 0.2.0 summed the "
            "two-head BCE over classes by default, where this release averages it): if its run did not set "
            "bce_reduction, pass --model.init_args.loss_options '{bce_reduction: sum}' to resume it as it began."
        )
    changed = [name for name, value in saved.items() if name in options and options[name] != value]
    if not changed:
        return None
    fixes = [f"--model.init_args.mu {saved['mu']}"] if "mu" in changed else []
    others = [name for name in changed if name != "mu"]
    if others:
        fixes.append(
            "--model.init_args.loss_options '{" + ", ".join(f"{name}: {saved[name]}" for name in others) + "}'"
        )
    raise InvalidInputError(
        f"The checkpoint's training ran with {', '.join(f'{name}={saved[name]!r}' for name in changed)}, but this "
        f"run's loss has {', '.join(f'{name}={options[name]!r}' for name in changed)}: to resume it as it began, "
        f"pass {' '.join(fixes)} (or start a new run, without --ckpt_path)."
    )


def load(
    checkpoint: dict[str, Any],
    num_classes: int,
    class_names: list[str] | None,
    method: str,
    calibration: Calibration,
    loss: AverageKLoss,
    trained_ks: tuple[float, ...],
) -> None:
    """Upgrade and check a checkpoint being loaded, then restore the calibration, loss state and random streams."""
    upgrade(checkpoint)
    if CHECKPOINT_KEY not in checkpoint:
        return
    check_compatible(checkpoint, num_classes, class_names, method)
    saved = checkpoint[CHECKPOINT_KEY]
    check_trained_ks(saved.get("trained_ks"), trained_ks)
    calibration.load_state_dict(saved, checkpoint.get("global_step"))
    for name, state in loss.epoch_states().items():
        state.load_state_dict(saved.get("loss_state", {}).get(name, {}))
    if "rng_states" in saved:
        # Continue the random streams of the interrupted run (see avgk_lightning.resume); the first
        # training batches are drawn before any later hook, and evaluation draws nothing from them.
        restore_rng_states(saved["rng_states"])
