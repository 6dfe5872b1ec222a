"""The pseudo-labels of the two-head loss: the rule the training step applies and the epoch statistic behind λ_pl.

The module owns a :class:`PseudoLabelRule` (K and the epoch's λ_pl) and applies it to every training
batch; each step returns a :class:`PseudoLabelStep`. The
:class:`~avgk_lightning.callbacks.PseudoLabelThreshold` callback feeds the steps to
:class:`PseudoLabelStatistics` and, at the end of the epoch, sets the rule's threshold for the next
one. That rule and that step are the whole interface between the callback and the module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from avgk_lightning.checks import check_choice
from avgk_lightning.epoch_state import EpochState
from avgk_lightning.functional import _batch_pseudo_label_threshold, _pseudo_labels
from avgk_lightning.naming import format_k

__all__ = [
    "NonTrueScoreHistogram",
    "PseudoLabelRule",
    "PseudoLabelStatistics",
    "PseudoLabelStep",
    "histogram_threshold",
]

# Histogram over the float32 bit pattern of the softmax scores: for non-negative floats the pattern
# is monotone in the value, so bins ordered by index are ordered by value. Dropping the 12 lowest bits
# keeps 11 mantissa bits: every bin spans at most 2**-11 (0.05%) of its lower edge. Scores lie in
# [0, 1], whose patterns end at 0x3F800000: 260,097 bins, 2 MB of int64 whatever the data set size.
_HISTOGRAM_SHIFT = 12
_HISTOGRAM_BINS = (0x3F800000 >> _HISTOGRAM_SHIFT) + 1


def _bin_edge(index: int) -> float:
    """The smallest float32 value that falls in bin `index`."""
    return torch.tensor(index << _HISTOGRAM_SHIFT, dtype=torch.int32).view(torch.float32).item()


def _bin_indices(scores: Tensor) -> Tensor:
    """The int32 bin of each score (NaN and anything above 1 land in the top bin, negatives in bin 0)."""
    patterns = scores.detach().float().contiguous().view(torch.int32) >> _HISTOGRAM_SHIFT
    return patterns.clamp_(0, _HISTOGRAM_BINS - 1)


def histogram_threshold(histogram: Tensor, count: int) -> float:
    """Threshold with `count` of the histogrammed scores above it, interpolated inside the boundary bin.

    `histogram` counts scores per bin of their float32 bit pattern (see :class:`NonTrueScoreHistogram`).
    The scores above the returned value number `count` up to the content of one bin, whose width is at
    most 0.05% of its value; inside that bin the scores are taken as evenly spread.

    Example:
        >>> scores = torch.tensor([0.9, 0.6, 0.3, 0.1])
        >>> histogram = torch.zeros(_HISTOGRAM_BINS, dtype=torch.long).index_add_(
        ...     0, _bin_indices(scores), torch.ones(4, dtype=torch.long))
        >>> 0.3 < histogram_threshold(histogram, 2) <= 0.6
        True
    """
    total = int(histogram.sum())
    if count <= 0:
        return float("inf")
    if count >= total:
        return 0.0
    at_or_above = histogram.flip(0).cumsum(0).flip(0)  # scores in this bin or higher ones
    boundary = int((at_or_above >= count).nonzero().max())
    in_bin = int(histogram[boundary])
    needed = count - (int(at_or_above[boundary]) - in_bin)  # in (0, in_bin]
    lower, upper = _bin_edge(boundary), _bin_edge(boundary + 1)
    return upper - (upper - lower) * needed / in_bin


class NonTrueScoreHistogram:
    """Counts of the non-true softmax scores per bin of their float32 bit pattern.

    A fixed-size int64 tensor (:attr:`counts`, 2 MB) whatever the number of scores streamed through
    :meth:`update`; :meth:`threshold` reads the value with a given number of scores above it.

    Example:
        >>> histogram = NonTrueScoreHistogram()
        >>> histogram.update(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]]), torch.tensor([0, 1]))
        >>> 0.2 < histogram.threshold(1) <= 0.4  # one non-true score (0.4) above it
        True
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        # One spare bin past the last one collects the true-class entries, which the statistic excludes.
        self._bins = torch.zeros(_HISTOGRAM_BINS + 1, dtype=torch.long, device=device)
        self._one = torch.ones(1, dtype=torch.long, device=device)

    @property
    def counts(self) -> Tensor:
        """The non-true scores counted per bin (int64, one entry per bin)."""
        return self._bins[:_HISTOGRAM_BINS]

    def update(self, softmax_probs: Tensor, target: Tensor) -> None:
        """Add the non-true entries of a (B, L) batch of softmax scores."""
        # Four kernels: the bins (shift, clamp), the true entries sent to the spare bin, one scatter-add.
        bins = _bin_indices(softmax_probs)
        bins.scatter_(1, target.long().unsqueeze(1), _HISTOGRAM_BINS)
        self._bins.index_add_(0, bins.view(-1), self._one.expand(bins.numel()))

    def threshold(self, count: int) -> float:
        """The value with `count` of the scores seen above it (see :func:`histogram_threshold`)."""
        return histogram_threshold(self.counts, count)

    @property
    def nbytes(self) -> int:
        """The statistic's memory: the bins, the spare bin and the constant one."""
        return (self._bins.numel() + self._one.numel()) * self._bins.element_size()


class PseudoLabelStep(NamedTuple):
    """What one training step did with the pseudo-labels (returned under ``"pseudo_labels"``).

    With one K the labels are (B, L) and the threshold 0-d; with n K (a multi-label head per K) the
    labels are (B, n, L) and the thresholds (n,), in the order of the rule's `k`.
    """

    #: float pseudo-labels: the true label, plus the non-true classes scoring at least λ_pl
    labels: Tensor
    #: (B, L) softmax scores they were read from (float32, no gradient)
    softmax_probs: Tensor
    #: (B,) the training labels
    target: Tensor
    #: the λ_pl applied (the epoch's, or the batch rule's)
    threshold: Tensor


def _as_ks(k: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(value) for value in k) if isinstance(k, Sequence) else (float(k),)


@dataclass
class PseudoLabelRule:
    r"""The pseudo-label rule of the two-head loss: the true label plus the non-true classes with score >= λ_pl.

    `threshold` is the epoch's λ_pl, set by :class:`~avgk_lightning.callbacks.PseudoLabelThreshold`; while
    it is None (the first epoch, or ``scope="batch"``) each batch uses the batch rule: the B·(K - 1)
    largest non-true scores of the batch lie above its λ_pl.

    With a sequence of K (one multi-label head per K), every K gets its own pseudo-labels from the same
    softmax scores: the labels are (B, n, L) and `threshold` holds one λ_pl per K.

    Example:
        >>> rule = PseudoLabelRule(k=1.5)
        >>> step = rule(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 2]))
        >>> step.labels.tolist()  # one non-true positive in the batch of two
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        >>> PseudoLabelRule(k=(1, 1.5))(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 2])).labels[0]
        tensor([[1., 0., 0.],
                [1., 1., 0.]])
    """

    k: float | tuple[float, ...]
    threshold: float | list[float] | None = None

    def __call__(self, softmax_logits: Tensor, target: Tensor) -> PseudoLabelStep:
        """Pseudo-labels for a batch of softmax-head logits and its training labels."""
        probs = softmax_logits.detach().float().softmax(dim=1)
        if not isinstance(self.k, Sequence):
            if self.threshold is None:
                threshold = _batch_pseudo_label_threshold(probs, target, self.k)
            else:
                threshold = torch.tensor(self.threshold, device=probs.device)
            return PseudoLabelStep(_pseudo_labels(probs, target, threshold), probs, target, threshold)
        if self.threshold is None:
            thresholds = torch.stack([_batch_pseudo_label_threshold(probs, target, k) for k in self.k])
        else:
            thresholds = torch.tensor(self.threshold, device=probs.device)
        labels = probs.unsqueeze(1) >= thresholds.view(1, -1, 1)
        labels[torch.arange(probs.shape[0], device=probs.device), :, target] = True
        return PseudoLabelStep(labels.to(probs.dtype), probs, target, thresholds)


class PseudoLabelStatistics(EpochState):
    """The epoch statistic behind λ_pl, and the realised pseudo-label set size.

    During an epoch (:meth:`start_epoch`, then :meth:`update` per step) it counts the non-true softmax
    scores in a :class:`NonTrueScoreHistogram` (``scope="epoch"``) and totals the samples, positives and
    batch thresholds. :meth:`merge` sets :attr:`threshold`, the λ_pl for the next epoch, so that
    (K - 1)·N of the epoch's N·(L - 1) non-true scores lie above it, and :attr:`set_size` /
    :attr:`logged_threshold` for the logs. With ``scope="batch"`` no histogram is kept and
    :attr:`threshold` stays None.

    The histogram does not depend on K: with several K (a sequence given to :meth:`start_epoch`) the
    same counts give one λ_pl per K, and :attr:`threshold`, :attr:`set_size` and
    :attr:`logged_threshold` are lists in the order of the K.

    Example:
        >>> statistics = PseudoLabelStatistics("epoch")
        >>> statistics.start_epoch(k=1.5, device="cpu")
        >>> statistics.update(PseudoLabelRule(k=1.5)(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]]), torch.tensor([0, 2])))
        >>> statistics.merge(statistics.local_totals())  # one process
        >>> statistics.set_size, 0.1 < statistics.threshold < 0.25
        (1.5, True)
    """

    def __init__(self, scope: Literal["epoch", "batch"] = "epoch") -> None:
        check_choice("scope", scope, ("epoch", "batch"))
        self.scope = scope
        self.threshold: float | list[float] | None = None
        self.logged_threshold: float | list[float] | None = None
        self.set_size: float | list[float] | None = None
        self._k: float | tuple[float, ...] = 1.0
        self._histogram: NonTrueScoreHistogram | None = None
        # samples, pseudo-label positives per K, sum of batch thresholds per K, batches
        self._totals: Tensor | None = None
        # What a checkpoint written in the middle of an epoch had counted, until resume_epoch() takes it.
        self.interrupted_epoch: dict[str, Any] | None = None

    def start_epoch(self, k: float | Sequence[float], device: torch.device | str) -> None:
        """Start accumulating an epoch of pseudo-labels with target size `k` (or one per head: a sequence)."""
        self._k = tuple(map(float, k)) if isinstance(k, Sequence) else k
        if self.scope == "epoch":
            self._histogram = NonTrueScoreHistogram(device)
        self._totals = torch.zeros(2 + 2 * len(_as_ks(k)), dtype=torch.float64, device=device)

    def update(self, step: PseudoLabelStep) -> None:
        """Add one training step's pseudo-labels."""
        if self._histogram is not None:
            self._histogram.update(step.softmax_probs, step.target)
        heads = len(_as_ks(self._k))
        self._totals[0] += step.target.shape[0]
        if heads == 1:
            self._totals[1] += step.labels.sum()
        else:
            self._totals[1 : 1 + heads] += step.labels.sum(dim=(0, 2))
        self._totals[1 + heads : 1 + 2 * heads] += step.threshold
        self._totals[-1] += 1

    def local_totals(self) -> Tensor | None:
        if self._totals is None:
            return None
        if self._histogram is None:
            return self._totals
        # The totals travel with the histogram (exact integer counts): one all-reduce for both.
        return torch.cat([self._histogram.counts, self._totals.round().long()])

    def merge(self, totals: Tensor) -> None:
        ks = _as_ks(self._k)
        heads = len(ks)
        tail = totals[-(2 + 2 * heads) :].double()
        samples, batches = float(tail[0]), float(tail[-1])
        positives, threshold_sums = tail[1 : 1 + heads].tolist(), tail[1 + heads : 1 + 2 * heads].tolist()
        histogram = None if self._histogram is None else totals[: -(2 + 2 * heads)]
        self._histogram, self._totals = None, None
        if samples == 0:
            self.set_size = self.logged_threshold = None
            return
        one = not isinstance(self._k, Sequence)
        if histogram is not None:
            thresholds = [histogram_threshold(histogram, round((k - 1) * samples)) for k in ks]
            self.threshold = thresholds[0] if one else thresholds
            self.logged_threshold = self.threshold
        else:
            logged = [total / batches for total in threshold_sums]
            self.logged_threshold = logged[0] if one else logged
        sizes = [count / samples for count in positives]
        self.set_size = sizes[0] if one else sizes

    def logged(self) -> dict[str, float]:
        """The epoch's values to log: ``train/pseudo_label_threshold`` and ``train/pseudo_label_set_size``.

        With several K, one of each per K, named ``...@K`` as the metrics (:mod:`avgk_lightning.naming`).
        """
        if self.set_size is None:
            return {}
        if not isinstance(self._k, Sequence):
            return {
                "train/pseudo_label_threshold": float(self.logged_threshold),
                "train/pseudo_label_set_size": float(self.set_size),
            }
        values = {}
        for k, threshold, size in zip(self._k, self.logged_threshold, self.set_size):
            values[f"train/pseudo_label_threshold@{format_k(k)}"] = float(threshold)
            values[f"train/pseudo_label_set_size@{format_k(k)}"] = float(size)
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold = state["threshold"] if self.scope == "epoch" else None
        self.interrupted_epoch = state.get("interrupted_epoch")

    def epoch_so_far(self, reduce_sum: Callable[[Tensor], Tensor]) -> dict[str, Any] | None:
        """What the epoch under way has counted, summed over processes (one collective), or None between epochs.

        A checkpoint written in the middle of an epoch saves it under ``"interrupted_epoch"``; after a
        resume, :meth:`resume_epoch` continues from it.
        """
        if self._totals is None:
            return None
        histogram = None if self._histogram is None else reduce_sum(self._histogram.counts.clone()).cpu()
        k = list(self._k) if isinstance(self._k, Sequence) else self._k
        return {"k": k, "totals": reduce_sum(self._totals.clone()).cpu(), "histogram": histogram}

    def resume_epoch(self, device: torch.device | str, keep_counts: bool) -> None:
        """Continue the epoch a mid-epoch checkpoint interrupted; its counts go to one process only (`keep_counts`)."""
        saved, self.interrupted_epoch = self.interrupted_epoch, None
        self.start_epoch(saved["k"], device)
        if keep_counts:
            self._totals += saved["totals"].to(device)
            if self._histogram is not None and saved["histogram"] is not None:
                self._histogram.counts.add_(saved["histogram"].to(device))

    @property
    def accumulating(self) -> bool:
        """An epoch was started and not merged yet."""
        return self._totals is not None
