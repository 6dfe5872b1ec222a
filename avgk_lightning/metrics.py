"""torchmetrics Metrics of average-K classification, thin over :mod:`avgk_lightning.functional`.

Two regimes, as in the Pl@ntNet-300K protocol:

* ``threshold=None`` (calibration): the scores of every sample seen are kept (``"cat"`` states) and
  λ is calibrated on all of them at :meth:`compute` time, then exposed as ``.threshold``.
* a fixed ``threshold``: only counts are kept (``"sum"`` states), so memory is constant.

Under DDP the states are gathered (cat) or summed across processes before ``compute``, so the
result equals the single-process value as long as every sample is seen exactly once (use an
unrepeated sampler for evaluation, as the data modules of this package do).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from avgk_lightning.checks import (
    check_choice,
    check_coverage,
    check_k,
    check_num_classes,
    check_scores,
    check_target,
)
from avgk_lightning.diagnostics import coverage_threshold, frequency_groups, group_accuracy, set_size_diagnostics
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.functional import (
    _per_class_mean,
    _topk_hits,
    average_k_accuracy,
    average_k_hits,
    average_k_sets,
    average_k_threshold,
    mean_set_size,
    per_class_accuracy,
    topk_accuracy,
)
from avgk_lightning.naming import format_k

__all__ = ["AverageKAccuracy", "AverageKEvaluation", "EvaluationResult", "MeanSetSize", "format_k"]


class _AverageKMetric(Metric):
    """Shared state handling: calibration (cat states) or a fixed threshold (sum states)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_classes: int, k: float, threshold: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_num_classes(num_classes)
        check_k(k, num_classes)
        if threshold is not None and not isinstance(threshold, (int, float)):
            raise InvalidInputError(f"Expected argument `threshold` to be a number or None, but got {threshold!r}")
        self.num_classes = num_classes
        self.k = k
        self.calibrate = threshold is None
        self.threshold: Tensor | None = None if threshold is None else torch.tensor(float(threshold))
        if self.calibrate:
            self.add_state("scores", default=[], dist_reduce_fx="cat")
            self.add_state("target", default=[], dist_reduce_fx="cat")

    def _check_update(self, scores: Tensor, target: Tensor | None) -> None:
        check_scores(scores)
        if scores.shape[1] != self.num_classes:
            raise InvalidInputError(
                f"Expected argument `scores` to have num_classes={self.num_classes} columns, "
                f"but got shape {tuple(scores.shape)}"
            )
        if target is not None:
            check_target(scores, target)

    def _calibrated_scores(self) -> tuple[Tensor, Tensor]:
        scores = dim_zero_cat(self.scores)
        self.threshold = average_k_threshold(scores, self.k)
        return scores, dim_zero_cat(self.target)


class AverageKAccuracy(_AverageKMetric):
    r"""Average-K accuracy: the fraction of samples whose true label is in :math:`\{j : s_j \ge \lambda\}`.

    With ``threshold=None`` λ is calibrated at :meth:`compute` on all the scores seen so that their sets
    average `k` labels (:func:`~avgk_lightning.functional.average_k_threshold`); it is then readable as
    ``.threshold``. With a fixed threshold the metric streams in constant memory.

    Args:
        num_classes: number of classes L.
        k: target average set size, in (0, L).
        threshold: a fixed λ, or None to calibrate it.
        average: ``"micro"`` (over samples) or ``"macro"`` (per true class, then the mean over the
            classes present).

    Example:
        >>> import torch
        >>> metric = AverageKAccuracy(num_classes=3, k=1.5)
        >>> metric.update(torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]]), torch.tensor([1, 2]))
        >>> metric.compute(), metric.threshold
        (tensor(0.5000), tensor(0.4000))
    """

    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        k: float,
        threshold: float | None = None,
        average: Literal["micro", "macro"] = "micro",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, k, threshold, **kwargs)
        check_choice("average", average, ("micro", "macro"))
        self.average = average
        if not self.calibrate:
            size = num_classes if average == "macro" else 1
            self.add_state("correct", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("support", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, target: Tensor) -> None:
        """Add a batch of (N, L) scores and their (N,) true labels."""
        self._check_update(scores, target)
        if self.calibrate:
            self.scores.append(scores.detach())
            self.target.append(target.detach().long())
            return
        hits = average_k_hits(scores, target, self.threshold.to(scores.device)).long()
        if self.average == "macro":
            self.correct += torch.bincount(target.long(), weights=hits, minlength=self.num_classes).long()
            self.support += torch.bincount(target.long(), minlength=self.num_classes)
        else:
            self.correct += hits.sum()
            self.support += target.numel()

    def compute(self) -> Tensor:
        """Average-K accuracy over everything seen since the last reset."""
        if self.calibrate:
            scores, target = self._calibrated_scores()
            return average_k_accuracy(scores, target, self.threshold, average=self.average)
        present = self.support > 0
        return (self.correct[present].double() / self.support[present]).mean().float()


class MeanSetSize(_AverageKMetric):
    r"""Mean set size :math:`\frac{1}{N} \sum_i |\{j : s_{ij} \ge \lambda\}|`.

    With ``threshold=None`` it is k up to ties and rounding (λ is calibrated on the same scores), which
    makes it a check of the calibration; with the λ of another split it measures how far that split
    drifts from k.

    Args:
        num_classes: number of classes L.
        k: target average set size, in (0, L).
        threshold: a fixed λ, or None to calibrate it.

    Example:
        >>> import torch
        >>> metric = MeanSetSize(num_classes=3, k=1.5, threshold=0.25)
        >>> metric.update(torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]]))
        >>> metric.compute()
        tensor(2.)
    """

    higher_is_better = None

    def __init__(self, num_classes: int, k: float, threshold: float | None = None, **kwargs: Any) -> None:
        super().__init__(num_classes, k, threshold, **kwargs)
        if not self.calibrate:
            self.add_state("set_size_sum", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, target: Tensor | None = None) -> None:
        """Add a batch of (N, L) scores; `target` is accepted (and checked) for use in collections."""
        self._check_update(scores, target)
        if self.calibrate:
            self.scores.append(scores.detach())
            self.target.append(
                target.detach().long() if target is not None else torch.zeros(0, dtype=torch.long, device=scores.device)
            )
            return
        self.set_size_sum += average_k_sets(scores, self.threshold.to(scores.device)).sum()
        self.total += scores.shape[0]

    def compute(self) -> Tensor:
        """Mean set size over everything seen since the last reset."""
        if self.calibrate:
            scores, _ = self._calibrated_scores()
            return mean_set_size(scores, self.threshold)
        return self.set_size_sum.double().div(self.total).float()


@dataclass
class EvaluationResult:
    """What :class:`AverageKEvaluation` computes for one head: metric values, the thresholds and the breakdowns.

    It reads like a mapping of metric names (``"avgk_acc@2"``, ``"threshold@2"``, ``"coverage@0.9"``, ...,
    without stage or head: see :mod:`avgk_lightning.naming`) to 0-d tensors.

    Attributes:
        values: every metric by name, the thresholds included (``threshold@K``, ``coverage_threshold@c``).
        thresholds: λ_K per K, as calibrated (validation) or applied (test).
        coverage_thresholds: λ_c per target coverage c.
        set_size_histograms: per K, the number of samples with each set size 0..L (diagnostics only).
        per_class_accuracy: per K, the (L,) average-K accuracy of each true class, NaN where absent
            (diagnostics only).
    """

    values: dict[str, Tensor]
    thresholds: dict[float, float]
    coverage_thresholds: dict[float, float] = field(default_factory=dict)
    set_size_histograms: dict[float, Tensor] = field(default_factory=dict)
    per_class_accuracy: dict[float, Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def items(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self.values.items())

    # Not a collections.abc.Mapping subclass: torchmetrics rebuilds Mappings returned by compute() from
    # their items alone, which would drop the thresholds and breakdowns.


class AverageKEvaluation(Metric):
    """The evaluation protocol for one head: every K of `ks` from one copy of the scores.

    Keeps the scores and labels of the split (cat states, gathered across processes) and computes an
    :class:`EvaluationResult` with, for each K, ``avgk_acc@K``, ``avgk_acc_macro@K``, ``set_size@K``,
    ``threshold@K`` and, for integer K, ``topk_acc@K``. With ``thresholds=None`` each λ_K is calibrated
    on these scores (validation); with a mapping K -> λ_K those are applied unchanged (test).

    For each target coverage c of `coverages` it also computes ``coverage@c`` (the fraction of samples
    whose true class is in its set), ``coverage_set_size@c`` and ``coverage_threshold@c``, with the
    split-conformal λ_c (:func:`~avgk_lightning.diagnostics.coverage_threshold`) calibrated here or fixed
    by :meth:`set_thresholds`.

    With ``diagnostics=True`` (test) it adds, per K: ``avgk_acc_{few,medium,many}@K`` (by training-class
    frequency, when `class_counts` are given) and for integer K ``topk_acc_{few,medium,many}@K``;
    ``coverage_size{1,2,3-5,6+}@K``, ``empty_rate@K``, ``singleton_rate@K``; and the set-size histogram
    and per-class accuracy of each K.

    Args:
        num_classes: number of classes L.
        ks: the K values to report, each in (0, L).
        thresholds: fixed λ_K per K, or None to calibrate.
        coverages: target coverages (1 - alpha), each in (0, 1).
        class_counts: training samples per class, for the frequency breakdown.
        frequency_boundaries: (b1, b2): few < b1 <= medium <= b2 < many training samples.
        diagnostics: compute the breakdowns above.

    Example:
        >>> import torch
        >>> evaluation = AverageKEvaluation(num_classes=3, ks=[1, 1.5])
        >>> evaluation.update(torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]]), torch.tensor([1, 0]))
        >>> result = evaluation.compute()
        >>> float(result["avgk_acc@1.5"]), float(result["topk_acc@1"]), result.thresholds[1.5]
        (1.0, 0.5, 0.4000000059604645)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ks: Sequence[float],
        thresholds: Mapping[float, float] | None = None,
        coverages: Sequence[float] = (),
        class_counts: Sequence[int] | Tensor | None = None,
        frequency_boundaries: Sequence[int] = (20, 100),
        diagnostics: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_num_classes(num_classes)
        if not ks:
            raise InvalidInputError("Expected argument `ks` to hold at least one K, but got an empty list")
        for k in ks:
            check_k(k, num_classes, "argument `ks`")
        self.num_classes = num_classes
        self.ks = [float(k) for k in ks]
        for coverage in coverages:
            check_coverage(coverage, "every entry of argument `coverages`")
        self.coverages = [float(coverage) for coverage in coverages]
        self.class_groups = None if class_counts is None else frequency_groups(class_counts, frequency_boundaries)
        self.diagnostics = diagnostics
        self.fixed_thresholds: dict[float, float] | None = None
        self.fixed_coverage_thresholds: dict[float, float] | None = None
        self.set_thresholds(thresholds)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def set_thresholds(
        self, thresholds: Mapping[float, float] | None, coverage_thresholds: Mapping[float, float] | None = None
    ) -> None:
        """Fix λ_K for every K of `ks` and λ_c for the coverages given (test), or pass None to calibrate them."""
        self.fixed_coverage_thresholds = (
            None if coverage_thresholds is None else {float(c): float(v) for c, v in coverage_thresholds.items()}
        )
        if thresholds is None:
            self.fixed_thresholds = None
            return
        fixed = {float(k): float(v) for k, v in thresholds.items()}
        missing = [format_k(k) for k in self.ks if k not in fixed]
        if missing:
            raise InvalidInputError(
                f"No threshold for K = {', '.join(missing)}: the thresholds cover K = "
                f"{', '.join(format_k(k) for k in fixed) or 'none'}. Calibrate them on validation data first."
            )
        self.fixed_thresholds = {k: fixed[k] for k in self.ks}

    def update(self, scores: Tensor, target: Tensor) -> None:
        """Add a batch of (N, L) scores of this head and the (N,) true labels.

        N may be 0: a process of a distributed run that holds no sample of the split still updates, so that
        it enters the gathering of :meth:`compute` with the others.
        """
        if scores.ndim == 2 and scores.shape[0] == 0 and target.shape == (0,):
            self.scores.append(scores.detach().float())
            self.target.append(target.detach().long())
            return
        check_scores(scores)
        check_target(scores, target)
        self.scores.append(scores.detach().float())
        self.target.append(target.detach().long())

    def compute(self) -> EvaluationResult:
        """All metrics for every K and coverage, with the thresholds used and the breakdowns."""
        scores, target = dim_zero_cat(self.scores), dim_zero_cat(self.target)
        result = EvaluationResult(values={}, thresholds={})
        for k in self.ks:
            if self.fixed_thresholds is None:
                threshold = average_k_threshold(scores, k)
            else:
                threshold = torch.tensor(self.fixed_thresholds[k], device=scores.device)
            name = format_k(k)
            hits = average_k_hits(scores, target, threshold)
            result.thresholds[k] = float(threshold)
            result.values[f"avgk_acc@{name}"] = hits.float().mean()
            result.values[f"avgk_acc_macro@{name}"] = _per_class_mean(hits, target, self.num_classes)
            result.values[f"set_size@{name}"] = mean_set_size(scores, threshold)
            if k.is_integer():
                result.values[f"topk_acc@{name}"] = topk_accuracy(scores, target, int(k))
            if self.diagnostics:
                self._diagnostics(result, scores, target, hits, threshold, k)
            result.values[f"threshold@{name}"] = threshold
        for coverage in self.coverages:
            if self.fixed_coverage_thresholds is None:
                threshold = coverage_threshold(scores, target, coverage)
            elif coverage in self.fixed_coverage_thresholds:
                threshold = torch.tensor(self.fixed_coverage_thresholds[coverage], device=scores.device)
            else:
                continue  # not calibrated for this coverage (e.g. an older checkpoint)
            name = format_k(coverage)
            result.coverage_thresholds[coverage] = float(threshold)
            result.values[f"coverage@{name}"] = average_k_hits(scores, target, threshold).float().mean()
            result.values[f"coverage_set_size@{name}"] = mean_set_size(scores, threshold)
            result.values[f"coverage_threshold@{name}"] = threshold
        return result

    def _diagnostics(
        self, result: EvaluationResult, scores: Tensor, target: Tensor, hits: Tensor, threshold: Tensor, k: float
    ) -> None:
        name = format_k(k)
        set_sizes = average_k_sets(scores, threshold).sum(dim=1)
        for key, value in set_size_diagnostics(set_sizes, hits).items():
            result.values[f"{key}@{name}"] = value
        if self.class_groups is not None:
            for group, value in group_accuracy(hits, target, self.class_groups).items():
                result.values[f"avgk_acc_{group}@{name}"] = value
            if k.is_integer():
                topk_hits = _topk_hits(scores, target, int(k))
                for group, value in group_accuracy(topk_hits, target, self.class_groups).items():
                    result.values[f"topk_acc_{group}@{name}"] = value
        result.set_size_histograms[k] = torch.bincount(set_sizes, minlength=self.num_classes + 1).cpu()
        result.per_class_accuracy[k] = per_class_accuracy(hits, target, self.num_classes).cpu()
