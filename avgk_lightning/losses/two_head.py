"""The two-head loss of the paper and its plug-in baseline, cross-entropy on the softmax head alone."""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401  (used by the doctests)
import torch.nn.functional as F

from avgk_lightning.checks import check_choice, check_integer
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.losses.base import AverageKLoss

__all__ = ["SoftmaxLoss", "TwoHeadLoss"]


class SoftmaxLoss(AverageKLoss):
    """Cross-entropy on the softmax head; sets by thresholding the softmax probabilities (the plug-in baseline).

    Example:
        >>> terms = SoftmaxLoss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(4)
        1.3863
    """

    name = "softmax"
    set_head = "softmax"
    trained_heads = ("softmax",)

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        cross_entropy = F.cross_entropy(softmax_logits, target)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy}


class TwoHeadLoss(AverageKLoss):
    r"""Two-head loss :math:`\mathrm{CE}(a, y) + \mu \cdot \mathrm{BCE}(m, \tilde y)`, sets from the multi-label head.

    :math:`\tilde y` are the (gradient-free) pseudo-labels. With a multi-label head per K (logits and
    pseudo-labels of shape (B, n, L)) the BCE is averaged over the n heads as over the samples. The paper's abstract leaves open how the
    BCE over the C classes is reduced and whether training starts with cross-entropy alone; both are
    options, with the defaults chosen by the ablations in ``benchmarks/results/`` (``docs/reproduce.md``).
    The BCE is averaged over classes by default, so that the multi-label term leaves the shared features to
    cross-entropy: summed, each multi-label logit gets C times more gradient (1,081 times on Pl@ntNet-300K),
    which regularises a network that would memorise its noisy labels but harms one with few features. Where
    each choice wins, ties and loses against softmax thresholding is measured in ``docs/reproduce.md``.

    Args:
        mu: weight of the multi-label term (``--model.mu``).
        bce_reduction: ``"mean"`` (default): BCE averaged over samples and classes; ``"sum"``: summed over
            classes, averaged over samples (C times larger multi-label gradients).
        warmup_epochs: epochs of cross-entropy alone before the multi-label term starts (it is still
            computed and logged, with weight 0; the pseudo-label statistics are gathered meanwhile).

    Example:
        >>> labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
        >>> terms = TwoHeadLoss(mu=1.0)(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]), labels)
        >>> round(float(terms["loss"]), 4)  # log(4) + log(2)
        2.0794
        >>> terms = TwoHeadLoss(bce_reduction="sum")(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]), labels)
        >>> round(float(terms["loss"]), 4)  # log(4) + 4 log(2): four classes of log(2) each
        4.1589
    """

    name = "two_head"
    trained_heads = ("multilabel", "softmax")
    uses_pseudo_labels = True

    def __init__(self, mu: float = 1.0, bce_reduction: Literal["mean", "sum"] = "mean", warmup_epochs: int = 0) -> None:
        super().__init__()
        if mu < 0:
            raise InvalidInputError(f"Expected argument `mu` to be >= 0, but got {mu!r}")
        check_choice("bce_reduction", bce_reduction, ("mean", "sum"))
        check_integer("warmup_epochs", warmup_epochs, minimum=0)
        self.mu = mu
        self.bce_reduction = bce_reduction
        self.warmup_epochs = warmup_epochs
        self._epoch = 0

    def on_train_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        if pseudo_labels is None:
            raise InvalidInputError("TwoHeadLoss needs `pseudo_labels` (see avgk_lightning.functional.pseudo_labels)")
        cross_entropy = F.cross_entropy(softmax_logits, target)
        binary_cross_entropy = F.binary_cross_entropy_with_logits(
            multilabel_logits, pseudo_labels.to(multilabel_logits.dtype)
        )
        if self.bce_reduction == "sum":
            binary_cross_entropy = binary_cross_entropy * multilabel_logits.shape[-1]
        weight = 0.0 if self._epoch < self.warmup_epochs else self.mu
        return {
            "loss": cross_entropy + weight * binary_cross_entropy,
            "cross_entropy": cross_entropy,
            "binary_cross_entropy": binary_cross_entropy,
        }
