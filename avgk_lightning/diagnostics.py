r"""Where sets help: accuracy by training-class frequency and by set size, and coverage-target thresholds.

Pure tensor functions, used by :class:`~avgk_lightning.metrics.AverageKEvaluation` at test time.

Coverage-target (split-conformal) calibration, computed as TorchCP's ``THR`` score and MAPIE's
``"lac"`` method compute it: with calibration (validation) scores :math:`t_i = s_{i,y_i}` of the true
classes, non-conformity :math:`1 - t_i`, :math:`n` samples and target coverage :math:`1 - \alpha`,

.. math::
    \hat q = \mathrm{quantile}_{\text{higher}}\big(\{1 - t_i\},\ \lceil (n+1)(1-\alpha) \rceil / n\big), \qquad
    S(x) = \{j : 1 - s_j(x) \le \hat q\} = \{j : s_j(x) \ge \lambda\},\ \lambda = 1 - \hat q,

where ``quantile_higher`` is numpy's / torch's ``quantile(..., method="higher")`` (position
:math:`q(n-1)`, rounded up), as both libraries call it. With :math:`r = \lceil (n+1)(1-\alpha) \rceil`
(the finite-sample correction is the :math:`n + 1`) that is the :math:`\min(r + 1, n)`-th smallest
non-conformity score: one more than the textbook :math:`r`-th when :math:`r < n`, so slightly
conservative; test coverage is at least :math:`1 - \alpha` on exchangeable data either way. λ is
taken as the matching true-class score itself (no rounding of :math:`1 - (1 - t)`). When
:math:`r > n` every class is in every set (:math:`\lambda = 0`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from avgk_lightning.checks import check_coverage, check_frequency_boundaries

__all__ = [
    "FREQUENCY_GROUPS",
    "SIZE_STRATA",
    "coverage_threshold",
    "frequency_groups",
    "group_accuracy",
    "set_size_diagnostics",
]

FREQUENCY_GROUPS = ("few", "medium", "many")
#: (name, smallest size, largest size) of the set-size strata
SIZE_STRATA = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6+", 6, math.inf))


def frequency_groups(class_counts: Sequence[int] | Tensor, boundaries: Sequence[int] = (20, 100)) -> Tensor:
    """Group of each class by its number of training images: 0 few (< b1), 1 medium (b1..b2), 2 many (> b2).

    Example:
        >>> frequency_groups([5, 20, 100, 101], boundaries=(20, 100))
        tensor([0, 1, 1, 2])
    """
    check_frequency_boundaries(boundaries)
    low, high = boundaries
    counts = torch.as_tensor(class_counts)
    return (counts >= low).long() + (counts > high).long()


def group_accuracy(hits: Tensor, target: Tensor, groups: Tensor) -> dict[str, Tensor]:
    """Accuracy among the samples whose true class is in each frequency group (groups without samples are left out).

    Example:
        >>> hits = torch.tensor([True, False, True, True])
        >>> group_accuracy(hits, torch.tensor([0, 0, 1, 2]), torch.tensor([0, 2, 2]))
        {'few': tensor(0.5000), 'many': tensor(1.)}
    """
    sample_groups = groups.to(target.device)[target.long()]
    results = {}
    for index, name in enumerate(FREQUENCY_GROUPS):
        members = sample_groups == index
        if members.any():
            results[name] = hits[members].float().mean()
    return results


def set_size_diagnostics(set_sizes: Tensor, hits: Tensor) -> dict[str, Tensor]:
    """Coverage (accuracy) per set-size stratum, and the rates of empty sets and of singletons.

    Keys: ``coverage_size1``, ``coverage_size2``, ``coverage_size3-5``, ``coverage_size6+`` (strata without
    samples left out), ``empty_rate``, ``singleton_rate``.

    Example:
        >>> diagnostics = set_size_diagnostics(torch.tensor([0, 1, 1, 3]), torch.tensor([False, True, False, True]))
        >>> {name: round(float(value), 2) for name, value in diagnostics.items()}
        {'coverage_size1': 0.5, 'coverage_size3-5': 1.0, 'empty_rate': 0.25, 'singleton_rate': 0.5}
    """
    results = {}
    for name, smallest, largest in SIZE_STRATA:
        members = (set_sizes >= smallest) & (set_sizes <= largest)
        if members.any():
            results[f"coverage_size{name}"] = hits[members].float().mean()
    results["empty_rate"] = (set_sizes == 0).float().mean()
    results["singleton_rate"] = (set_sizes == 1).float().mean()
    return results


def coverage_threshold(scores: Tensor, target: Tensor, coverage: float) -> Tensor:
    """Split-conformal λ for a target `coverage` (1 - alpha) from calibration scores and labels (module doc).

    Example:
        >>> scores = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> true = torch.tensor([0, 1, 1, 0])  # true-class scores 0.9, 0.4, 0.7, 0.2
        >>> float(coverage_threshold(scores, true, coverage=0.6))  # r = ceil(5 * 0.6) = 3: 4th smallest 1 - t
        0.20000000298023224
    """
    check_coverage(coverage)
    true_scores = scores.gather(1, target.long().unsqueeze(1)).squeeze(1)
    n = true_scores.numel()
    rank = math.ceil((n + 1) * coverage)  # r of the module doc
    if rank > n:
        return torch.zeros((), dtype=scores.dtype, device=scores.device)
    # quantile "higher" at level r / n of the ascending non-conformity: 0-based index ceil(r (n - 1) / n),
    # which is min(r, n - 1) (r (n - 1) / n is never within 1/n of an integer below n - 1).
    index = min(rank, n - 1)
    return true_scores.kthvalue(n - index).values  # the (index+1)-th largest t is the matching 1 - q
