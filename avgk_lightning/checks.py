"""Argument checks shared by the whole library: each raises :class:`~avgk_lightning.errors.InvalidInputError`.

Every message names the argument, what it expects and the value it got, so that ``train.py`` can print
it as is (``error: ...``). InvalidInputError is a ValueError: Python callers catch it as usual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from avgk_lightning.errors import InvalidInputError

__all__ = [
    "check_choice",
    "check_coverage",
    "check_frequency_boundaries",
    "check_integer",
    "check_k",
    "check_num_classes",
    "check_number",
    "check_probability",
    "check_scores",
    "check_target",
    "check_threshold",
]


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_integer(name: str, value: object, minimum: int = 1) -> None:
    """Raise unless `value` is an integer >= `minimum`.

    Example:
        >>> check_integer("batch_size", 0)
        Traceback (most recent call last):
        ...
        avgk_lightning.errors.InvalidInputError: Expected argument `batch_size` to be a positive integer, but got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidInputError(f"Expected argument `{name}` to be {expected}, but got {value!r}")


def check_probability(name: str, value: object) -> None:
    """Raise unless `value` is a number in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"Expected argument `{name}` to be a probability in [0, 1], but got {value!r}")


def check_number(name: str, value: object, low: float, high: float, closed: str = "[]") -> None:
    """Raise unless `value` is a number between `low` and `high`; `closed` says which ends belong: "[]", "(]", ...

    Example:
        >>> check_number("compression", 0, 0, 1, closed="(]")
        Traceback (most recent call last):
        ...
        avgk_lightning.errors.InvalidInputError: Expected argument `compression` to be a number in (0, 1], but got 0
    """
    inside = _is_number(value) and (low <= value if closed[0] == "[" else low < value)
    inside = inside and (value <= high if closed[1] == "]" else value < high)
    if not inside:
        raise InvalidInputError(
            f"Expected argument `{name}` to be a number in {closed[0]}{low:g}, {high:g}{closed[1]}, but got {value!r}"
        )


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise unless `value` is one of `choices`."""
    if value not in choices:
        expected = " or ".join(repr(choice) for choice in choices)
        raise InvalidInputError(f"Expected argument `{name}` to be {expected}, but got {value!r}")


def check_num_classes(num_classes: object) -> None:
    """Raise unless `num_classes` is an integer >= 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidInputError(f"Expected argument `num_classes` to be an integer >= 2, but got {num_classes!r}")


def check_k(k: object, num_classes: int, name: str = "argument `k`") -> None:
    """Raise unless `k` is an evaluated K: a number in (0, L). `name` says which argument holds it."""
    if not _is_number(k) or not 0 < k < num_classes:
        raise InvalidInputError(f"Expected {name} to be a number in (0, num_classes={num_classes}), but got {k!r}")


def check_coverage(value: object, argument: str = "argument `coverage`") -> None:
    """Raise unless `value` is a target coverage 1 - alpha in (0, 1)."""
    if not _is_number(value) or not 0 < value < 1:
        raise InvalidInputError(f"Expected {argument} to be a target coverage in (0, 1) (1 - alpha), but got {value!r}")


def check_frequency_boundaries(boundaries: Sequence[int]) -> None:
    """Raise unless `boundaries` are two integers 0 < b1 <= b2."""
    if len(boundaries) != 2 or not 0 < boundaries[0] <= boundaries[1]:
        raise InvalidInputError(
            "Expected argument `frequency_boundaries` to be two integers 0 < b1 <= b2 (few < b1 <= medium <= b2 "
            f"< many training images), but got {tuple(boundaries)!r}"
        )


def check_scores(scores: object) -> None:
    """Raise unless `scores` is a float (N, L) tensor with N >= 1."""
    if not isinstance(scores, Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InvalidInputError(f"Expected argument `scores` to be a float tensor of shape (N, L), but got {shape}")
    if scores.shape[0] == 0:
        raise InvalidInputError("Expected argument `scores` to hold at least one sample, but got shape (0, L)")


def check_target(scores: Tensor, target: object) -> None:
    """Raise unless `target` holds N class indices in [0, L) for the (N, L) `scores`."""
    if not isinstance(target, Tensor) or target.ndim != 1 or target.shape[0] != scores.shape[0]:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise InvalidInputError(
            f"Expected argument `target` to be a 1-D tensor of length N={scores.shape[0]} matching `scores`, "
            f"but got shape {shape}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise InvalidInputError(
            f"Expected argument `target` to hold integer class indices, but got dtype {target.dtype}"
        )
    num_classes = scores.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        raise InvalidInputError(
            f"Expected argument `target` to hold class indices in [0, {num_classes}), but got {bad}"
        )


def check_threshold(threshold: float | Tensor) -> float | Tensor:
    """`threshold` as a float or a 0-d tensor; raise unless it is a number or a one-element tensor."""
    if isinstance(threshold, Tensor):
        if threshold.numel() != 1:
            raise InvalidInputError(
                f"Expected argument `threshold` to be a scalar, but got shape {tuple(threshold.shape)}"
            )
        return threshold.reshape(())
    if not _is_number(threshold) or math.isnan(threshold):
        raise InvalidInputError(f"Expected argument `threshold` to be a number, but got {threshold!r}")
    return float(threshold)


def check_module_arguments(
    num_classes: int,
    k: object,
    class_names: Sequence[str] | None,
    class_counts: Sequence[int] | None,
    eval_ks: Sequence[float] | None,
    predict_k: float | None,
    coverages: Sequence[float],
    frequency_boundaries: Sequence[int],
) -> None:
    """The argument checks of :class:`~avgk_lightning.TwoHeadModule` (K, classes, evaluated K, coverages)."""
    check_num_classes(num_classes)
    values = list(k) if isinstance(k, Sequence) and not isinstance(k, str) else [k]
    if not values or not all(_is_number(value) and 1 <= value < num_classes for value in values):
        raise InvalidInputError(
            f"Expected argument `k` to be a number in [1, num_classes={num_classes}), or a list of them (a "
            f"multi-label head per K), but got {k!r}: it is the average number of positive pseudo-labels, the "
            "true label included"
        )
    if len({float(value) for value in values}) != len(values):
        raise InvalidInputError(f"Expected the K of argument `k` to be distinct, but got {list(k)!r}")
    for name, values in (("class_names", class_names), ("class_counts", class_counts)):
        if values is not None and len(values) != num_classes:
            raise InvalidInputError(
                f"Expected argument `{name}` to have num_classes={num_classes} entries, but got {len(values)}"
            )
    if predict_k is not None:
        check_k(predict_k, num_classes, "argument `predict_k`")
    for value in eval_ks or ():
        check_k(value, num_classes, "every entry of argument `eval_ks`")
    for coverage in coverages:
        check_coverage(coverage, "every entry of argument `coverages`")
    check_frequency_boundaries(frequency_boundaries)
