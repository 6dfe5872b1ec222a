"""Pure tensor functions of average-K classification: thresholds, sets, accuracies, pseudo-labels.

Every threshold in the library (validation calibration, the metrics, the pseudo-label rule and the
benchmarks) goes through :func:`_count_threshold`, the selection form of the reference sort rule.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from avgk_lightning.checks import check_choice, check_k, check_scores, check_target, check_threshold
from avgk_lightning.errors import InvalidInputError

__all__ = [
    "average_k_accuracy",
    "average_k_hits",
    "average_k_sets",
    "average_k_threshold",
    "batch_pseudo_label_threshold",
    "mean_set_size",
    "ordered_sets",
    "per_class_accuracy",
    "pseudo_labels",
    "topk_accuracy",
]

# Above this many values a sampled pre-filter keeps only the top tail before the exact selection.
_PREFILTER_MIN_VALUES = 1 << 20
_PREFILTER_SAMPLE_SIZE = 1 << 17


def _top_values(values: Tensor, count: int) -> Tensor:
    """The `count` largest entries of the 1-D tensor `values`, in decreasing order (exact).

    Large inputs are first reduced to their top tail: a cut is read off a fixed-seed sample so that,
    with overwhelming probability, at least `count` values lie at or above it; the selection then runs
    on those candidates only. Whenever the cut is too high the full tensor is used, so the result is
    always exact.
    """
    if values.numel() >= _PREFILTER_MIN_VALUES and count < values.numel() // 8:
        generator = torch.Generator(device=values.device).manual_seed(0)
        sample = values[
            torch.randint(values.numel(), (_PREFILTER_SAMPLE_SIZE,), generator=generator, device=values.device)
        ]
        expected = count * sample.numel() / values.numel()
        rank = min(sample.numel(), int(expected + 6.0 * math.sqrt(expected) + 16))
        cut = sample.topk(rank).values[-1]
        candidates = values[values >= cut]
        if candidates.numel() >= count:
            values = candidates
    return values.topk(count).values


def _count_threshold(values: Tensor, count: int) -> Tensor:
    """The reference rule on a flat tensor: (v_count + v_{count+1}) / 2 with v sorted decreasingly.

    `count` is clamped to [1, numel - 1] so that both neighbours exist (a single value is returned as is).
    """
    if values.numel() == 1:
        return values[0]
    count = min(max(int(count), 1), values.numel() - 1)
    top = _top_values(values, count + 1)
    return (top[-2] + top[-1]) / 2


def average_k_threshold(scores: Tensor, k: float) -> Tensor:
    r"""Global threshold so that the sets :math:`\{j : s_{ij} \ge \lambda\}` hold K labels on average.

    The Pl@ntNet-300K reference rule: sort the N·L scores decreasingly, :math:`v_1 \ge v_2 \ge \dots`,
    take :math:`m = \mathrm{round}(N k)` (clamped to [1, N·L - 1]) and return
    :math:`\lambda = (v_m + v_{m+1}) / 2`. Computed by selection, never by a full sort.

    Args:
        scores: (N, L) float scores (softmax probabilities or sigmoid scores).
        k: the target average set size, a real number in (0, L).

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]])
        >>> average_k_threshold(scores, k=1.5)  # 3 of the 6 scores lie above it
        tensor(0.4000)
    """
    check_scores(scores)
    check_k(k, scores.shape[1])
    return _count_threshold(scores.detach().flatten(), round(scores.shape[0] * k))


def average_k_sets(scores: Tensor, threshold: float | Tensor) -> Tensor:
    r"""Boolean (N, L) mask of the predicted sets :math:`S(x_i) = \{j : s_{ij} \ge \lambda\}`.

    Example:
        >>> import torch
        >>> average_k_sets(torch.tensor([[0.9, 0.5, 0.1]]), 0.4)
        tensor([[ True,  True, False]])
    """
    check_scores(scores)
    return scores >= check_threshold(threshold)


def ordered_sets(scores: Tensor, threshold: float | Tensor) -> list[list[int]]:
    """The set of each row as class indices ordered by decreasing score.

    Example:
        >>> import torch
        >>> ordered_sets(torch.tensor([[0.2, 0.9, 0.5], [0.1, 0.3, 0.2]]), 0.4)
        [[1, 2], []]
    """
    check_scores(scores)
    order = scores.argsort(dim=1, descending=True)
    kept = scores.gather(1, order) >= check_threshold(threshold)
    return [row[keep].tolist() for row, keep in zip(order, kept)]


def _true_class_scores(scores: Tensor, target: Tensor) -> Tensor:
    return scores.gather(1, target.long().unsqueeze(1)).squeeze(1)


def average_k_hits(scores: Tensor, target: Tensor, threshold: float | Tensor) -> Tensor:
    r"""Whether each sample's true label is in its set, :math:`s_{i,y_i} \ge \lambda` (boolean (N,)).

    Example:
        >>> import torch
        >>> average_k_hits(torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]]), torch.tensor([1, 2]), 0.4)
        tensor([ True, False])
    """
    return _true_class_scores(scores, target) >= threshold


def per_class_accuracy(hits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(L,) mean of `hits` per true class (an accuracy per class), NaN for classes without samples.

    Example:
        >>> import torch
        >>> per_class_accuracy(torch.tensor([True, False, True]), torch.tensor([0, 0, 2]), 3)
        tensor([0.5000,    nan, 1.0000])
    """
    return _per_class_double(hits, target, num_classes).float()


def _per_class_double(hits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    correct = torch.bincount(target.long(), weights=hits.double(), minlength=num_classes)
    support = torch.bincount(target.long(), minlength=num_classes)
    return correct / support  # 0 / 0 = NaN for absent classes


def _per_class_mean(hits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean of `hits` per true class, then the unweighted mean over classes present in `target`."""
    accuracies = _per_class_double(hits, target, num_classes)
    return accuracies[~accuracies.isnan()].mean().float()


def average_k_accuracy(
    scores: Tensor,
    target: Tensor,
    threshold: float | Tensor,
    average: Literal["micro", "macro"] = "micro",
) -> Tensor:
    r"""Fraction of samples whose true label is in their set, :math:`s_{i,y_i} \ge \lambda`.

    ``average="macro"`` computes it per true class, then takes the unweighted mean over the classes
    present in `target` (the paper's mean class average-K accuracy).

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2], [0.2, 0.7, 0.1]])
        >>> average_k_accuracy(scores, torch.tensor([1, 2, 1]), threshold=0.4)
        tensor(0.6667)
        >>> average_k_accuracy(scores, torch.tensor([1, 2, 1]), threshold=0.4, average="macro")
        tensor(0.5000)
    """
    check_scores(scores)
    check_target(scores, target)
    check_choice("average", average, ("micro", "macro"))
    hits = average_k_hits(scores, target, check_threshold(threshold))
    if average == "micro":
        return hits.float().mean()
    return _per_class_mean(hits, target.long(), scores.shape[1])


def mean_set_size(scores: Tensor, threshold: float | Tensor) -> Tensor:
    r"""Average number of labels per set, :math:`\frac{1}{N}\sum_i |S(x_i)|`.

    Example:
        >>> import torch
        >>> mean_set_size(torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]]), 0.4)
        tensor(1.5000)
    """
    check_scores(scores)
    return average_k_sets(scores, threshold).sum(dim=1, dtype=torch.float32).mean()


def _topk_hits(scores: Tensor, target: Tensor, k: int) -> Tensor:
    """Whether each true label is among its row's `k` highest scores (ties count for the true label)."""
    return _true_class_scores(scores, target) >= scores.topk(k, dim=1).values[:, -1]


def topk_accuracy(scores: Tensor, target: Tensor, k: int, average: Literal["micro", "macro"] = "micro") -> Tensor:
    """Fraction of samples whose true label is among their `k` highest scores (sets of exactly `k`).

    Ties are broken towards the true label (it counts as in the top-k when its score equals the k-th).

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]])
        >>> topk_accuracy(scores, torch.tensor([1, 2]), k=2)
        tensor(0.5000)
    """
    check_scores(scores)
    check_target(scores, target)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= scores.shape[1]:
        raise InvalidInputError(f"Expected argument `k` to be an integer in [1, {scores.shape[1]}], but got {k!r}")
    hits = _topk_hits(scores, target, k)
    if average == "micro":
        return hits.float().mean()
    return _per_class_mean(hits, target.long(), scores.shape[1])


def _pseudo_labels(softmax_probs: Tensor, target: Tensor, threshold: float | Tensor) -> Tensor:
    """Unchecked :func:`pseudo_labels` for the training step (no host-device synchronisation)."""
    probs = softmax_probs.detach()
    labels = probs >= threshold
    labels[torch.arange(probs.shape[0], device=probs.device), target] = True
    return labels.to(probs.dtype)


def _batch_pseudo_label_threshold(softmax_probs: Tensor, target: Tensor, k: float) -> Tensor:
    """Unchecked :func:`batch_pseudo_label_threshold` for the training step."""
    count = round(softmax_probs.shape[0] * (k - 1))
    if count <= 0:
        return torch.tensor(float("inf"), device=softmax_probs.device)
    non_true = torch.ones_like(softmax_probs, dtype=torch.bool)
    non_true[torch.arange(softmax_probs.shape[0], device=softmax_probs.device), target] = False
    return _count_threshold(softmax_probs.detach()[non_true], count)


def pseudo_labels(softmax_probs: Tensor, target: Tensor, threshold: float | Tensor) -> Tensor:
    r"""Pseudo-label matrix of the two-head loss: :math:`\tilde y_{ij} = 1` iff j = y_i or :math:`s_{ij} \ge \lambda`.

    Returns a float (N, L) tensor with no gradient: the true label is always positive.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45]])
        >>> pseudo_labels(probs, torch.tensor([2, 1]), threshold=0.4)
        tensor([[1., 0., 1.],
                [0., 1., 1.]])
    """
    check_scores(softmax_probs)
    check_target(softmax_probs, target)
    return _pseudo_labels(softmax_probs, target.long(), check_threshold(threshold))


def batch_pseudo_label_threshold(softmax_probs: Tensor, target: Tensor, k: float) -> Tensor:
    r"""Batch-scope pseudo-label threshold: the B·(K-1) largest non-true entries of the batch lie above it.

    The same reference rule as :func:`average_k_threshold`, applied to the B·(L-1) non-true softmax
    entries with m = round(B·(K-1)). With K = 1 (m = 0) it returns ``+inf``: only the true label is
    positive.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
        >>> batch_pseudo_label_threshold(probs, torch.tensor([0, 1]), k=1.5)  # one non-true entry above
        tensor(0.3000)
    """
    check_scores(softmax_probs)
    check_target(softmax_probs, target)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k < softmax_probs.shape[1]:
        raise InvalidInputError(
            f"Expected argument `k` to be a number in [1, num_classes={softmax_probs.shape[1]}), but got {k!r}"
        )
    return _batch_pseudo_label_threshold(softmax_probs, target.long(), k)
