r"""The weakly supervised single-positive baselines: one sigmoid head, the observed label as the only positive.

AN, AN-LS, WAN, EPR and EM, the baselines of the paper (Garcin et al., arXiv 2303.18118). Every
per-class term is averaged over classes and samples; the expected-positive regulariser is :math:`(\frac1B\sum_b\sum_j g_{bj} - K)^2 / C^2`.
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctests)
import torch.nn.functional as F
from torch import Tensor

from avgk_lightning.errors import InvalidInputError
from avgk_lightning.losses.base import AverageKLoss

__all__ = [
    "AssumeNegativeLoss",
    "EntropyMaximisationLoss",
    "ExpectedPositiveLoss",
    "LabelSmoothingAssumeNegativeLoss",
    "WeakAssumeNegativeLoss",
    "expected_positive_regulariser",
]


def _observed(target: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(target.long(), num_classes).bool()


def expected_positive_regulariser(scores: Tensor, k: float) -> Tensor:
    r"""EPR of Cole et al.: :math:`(\frac1B\sum_b\sum_j g_{bj} - K)^2 / C^2` for (B, C) sigmoid scores `g`.

    Example:
        >>> float(expected_positive_regulariser(torch.full((2, 4), 0.5), k=1.0))  # (2 - 1)^2 / 16
        0.0625
    """
    return (scores.sum(dim=1).mean() - k).pow(2) / scores.shape[1] ** 2


class AssumeNegativeLoss(AverageKLoss):
    """AN: binary cross-entropy with the observed label positive and every other class negative.

    Example:
        >>> terms = AssumeNegativeLoss()(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2)
        0.6931
    """

    name = "an"

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1]).to(multilabel_logits.dtype)
        loss = F.binary_cross_entropy_with_logits(multilabel_logits, observed)
        return {"loss": loss}


class LabelSmoothingAssumeNegativeLoss(AverageKLoss):
    """AN-LS: AN with label smoothing: targets 1 - `label_smoothing` for the observed label, `label_smoothing` else.

    Args:
        label_smoothing: the smoothing, in [0, 0.5); default 0.1.

    Example:
        >>> terms = LabelSmoothingAssumeNegativeLoss(0.1)(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2), whatever the targets, at logit 0
        0.6931
    """

    name = "an_ls"

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 0.5:
            raise InvalidInputError(
                f"Expected argument `label_smoothing` to be a number in [0, 0.5), but got {label_smoothing!r}"
            )
        self.label_smoothing = label_smoothing

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1]).to(multilabel_logits.dtype)
        smoothed = observed * (1 - self.label_smoothing) + (1 - observed) * self.label_smoothing
        return {"loss": F.binary_cross_entropy_with_logits(multilabel_logits, smoothed)}


class WeakAssumeNegativeLoss(AverageKLoss):
    r"""WAN: AN with each negative term weighted :math:`1/(C-1)`.

    Example:
        >>> terms = WeakAssumeNegativeLoss()(None, torch.zeros(1, 4), torch.tensor([0]))
        >>> round(float(terms["loss"]), 4)  # (log 2 + 3 * log(2) / 3) / 4
        0.3466
    """

    name = "wan"

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        num_classes = multilabel_logits.shape[1]
        observed = _observed(target, num_classes)
        positive = -F.logsigmoid(multilabel_logits) * observed
        negative = -F.logsigmoid(-multilabel_logits) * ~observed / (num_classes - 1)
        return {"loss": (positive + negative).mean(), "positive": positive.mean(), "negative": negative.mean()}


class ExpectedPositiveLoss(AverageKLoss):
    """EPR: the positive term only, plus the expected-positive regulariser towards `k` positives per sample.

    Args:
        k: expected number of positives per sample (the module's K).

    Example:
        >>> terms = ExpectedPositiveLoss(k=1.0)(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2) / 4 + (2 - 1)^2 / 16
        0.2358
    """

    name = "epr"

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = float(k)

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1])
        positive = (-F.logsigmoid(multilabel_logits) * observed).mean()
        regulariser = expected_positive_regulariser(multilabel_logits.sigmoid(), self.k)
        return {"loss": positive + regulariser, "positive": positive, "regulariser": regulariser}


class EntropyMaximisationLoss(AverageKLoss):
    r"""EM: the positive term, minus `alpha` times the binary entropy of each unobserved score.

    :math:`\ell = [j = y](-\log g_j) - \alpha [j \neq y] H(g_j)`, :math:`H(g) = -g\log g - (1-g)\log(1-g)`.

    Args:
        alpha: weight of the entropy term; default 0.1.

    Example:
        >>> terms = EntropyMaximisationLoss(alpha=0.1)(None, torch.zeros(1, 4), torch.tensor([0]))
        >>> round(float(terms["loss"]), 4)  # (log 2 - 0.1 * 3 * log 2) / 4
        0.1213
    """

    name = "em"

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        if alpha < 0:
            raise InvalidInputError(f"Expected argument `alpha` to be >= 0, but got {alpha!r}")
        self.alpha = alpha

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1])
        log_score, log_complement = F.logsigmoid(multilabel_logits), F.logsigmoid(-multilabel_logits)
        entropy = -(log_score.exp() * log_score + log_complement.exp() * log_complement)
        positive = (-log_score * observed).mean()
        unobserved_entropy = (entropy * ~observed).mean()
        return {
            "loss": positive - self.alpha * unobserved_entropy,
            "positive": positive,
            "unobserved_entropy": unobserved_entropy,
        }
