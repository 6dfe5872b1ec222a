"""Paired statistics of a study: per seed, a row's metric minus the reference row's on the same data.

Seeds are few, so a difference is summarised by its mean, its wins / ties / losses over seeds (a tie being
``|difference| < TIE``) and a verdict that is a win or a loss only when the 95% paired t-interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from avgk_lightning.naming import prefix as logged_prefix
from avgk_lightning.study.records import RunRecord

__all__ = ["SET_PREFIX", "TIE", "mean", "mean_std", "paired_differences", "paired_verdict", "runs_at", "signs"]

# The logged test names of the head that makes the sets: "test/".
SET_PREFIX = logged_prefix("test", "set", set_head="set")
TIE = 0.0005

# Two-sided 95% quantiles of Student's t distribution by degrees of freedom (seeds - 1).
_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_std(values: Sequence[float]) -> str:
    """``mean ± sample std`` to 4 decimals (the value alone for one seed).

    Example:
        >>> mean_std([0.80, 0.82]), mean_std([0.8])
        ('0.8100 ± 0.0141', '0.8000')
    """
    if len(values) == 1:
        return f"{values[0]:.4f}"
    average = mean(values)
    std = math.sqrt(sum((value - average) ** 2 for value in values) / (len(values) - 1))
    return f"{average:.4f} ± {std:.4f}"


def signs(differences: Sequence[float]) -> str:
    """``wins / ties / losses`` over seeds.

    Example:
        >>> signs([0.01, 0.0001, -0.02, 0.003])
        '2 / 1 / 1'
    """
    wins = sum(d >= TIE for d in differences)
    losses = sum(d <= -TIE for d in differences)
    return f"{wins} / {len(differences) - wins - losses} / {losses}"


def paired_verdict(differences: Sequence[float]) -> str:
    """``win`` or ``loss`` when the 95% paired t-interval of the mean difference excludes 0, else ``tie``.

    One seed cannot decide (``tie``).

    Example:
        >>> paired_verdict([0.010, 0.012, 0.011]), paired_verdict([0.02, -0.01, 0.004])
        ('win', 'tie')
        >>> paired_verdict([-0.05, -0.04, -0.06])
        'loss'
    """
    n = len(differences)
    if n < 2:
        return "tie"
    average = mean(differences)
    deviation = math.sqrt(sum((d - average) ** 2 for d in differences) / (n - 1))
    half_width = _T_975.get(n - 1, 2.0) * deviation / math.sqrt(n)
    if average - half_width > 0:
        return "win"
    return "loss" if average + half_width < 0 else "tie"


def runs_at(runs: Sequence[RunRecord], setting: str, label: str, k: float) -> list[RunRecord]:
    """The runs of `label` in `setting` that are evaluated at `k` (trained for it, if per K), ordered by seed."""
    chosen = [
        run
        for run in runs
        if run.setting == setting and run.label == label and (run.k == k if run.per_k else k in run.eval_ks)
    ]
    return sorted(chosen, key=lambda run: run.seed)


def paired_differences(
    runs: Sequence[RunRecord],
    setting: str,
    label: str,
    prefix: str,
    reference: str,
    metric: str,
    k: float,
    checkpoint: str,
    reference_prefix: str = SET_PREFIX,
) -> list[float] | None:
    """Per seed: `label`'s metric (head `prefix`) minus the `reference` row's (head `reference_prefix`, the set
    head by default), same seed; None if unpaired."""
    own = {run.seed: run for run in runs_at(runs, setting, label, k)}
    references = {run.seed: run for run in runs_at(runs, setting, reference, k)}
    seeds = sorted(set(own) & set(references))
    if not seeds:
        return None
    differences = []
    for seed in seeds:
        value = own[seed].value(checkpoint, prefix, metric, k)
        base = references[seed].value(checkpoint, reference_prefix, metric, k)
        if value is None or base is None:
            return None
        differences.append(value - base)
    return differences
