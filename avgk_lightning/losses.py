"""Training objectives of average-K classification, one registry keyed by the `method` name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from avgk_lightning.errors import InvalidInputError

__all__ = ["AverageKLoss", "SoftmaxLoss", "TwoHeadLoss", "LOSSES", "build_loss"]


class AverageKLoss(ABC):
    """One training method: its loss and the head whose scores make the sets.

    Subclasses define :meth:`__call__` and the class attributes below, and register themselves in
    :data:`LOSSES` under their `name`.
    """

    name: ClassVar[str]
    set_head: ClassVar[Literal["softmax", "multilabel"]]
    uses_pseudo_labels: ClassVar[bool] = False

    @abstractmethod
    def __call__(
        self,
        softmax_logits: Tensor,
        multilabel_logits: Tensor,
        target: Tensor,
        pseudo_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"loss": total, ...named terms}`` for a batch."""


class SoftmaxLoss(AverageKLoss):
    """Cross-entropy on the softmax head; sets by thresholding the softmax probabilities (the plug-in baseline).

    Example:
        >>> import torch
        >>> terms = SoftmaxLoss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(4)
        1.3863
    """

    name = "softmax"
    set_head = "softmax"

    def __call__(self, softmax_logits, multilabel_logits, target, pseudo_labels=None):
        cross_entropy = F.cross_entropy(softmax_logits, target)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy}


class TwoHeadLoss(AverageKLoss):
    r"""Two-head loss :math:`\mathrm{CE}(a, y) + \mu \cdot \mathrm{BCE}(m, \tilde y)`, sets from the multi-label head.

    BCE is averaged over classes and samples; :math:`\tilde y` are the (gradient-free) pseudo-labels.

    Args:
        mu: weight of the multi-label term.

    Example:
        >>> import torch
        >>> labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
        >>> terms = TwoHeadLoss(mu=1.0)(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]), labels)
        >>> round(float(terms["loss"]), 4)  # log(4) + log(2)
        2.0794
    """

    name = "two_head"
    set_head = "multilabel"
    uses_pseudo_labels = True

    def __init__(self, mu: float = 1.0) -> None:
        if mu < 0:
            raise InvalidInputError(f"Expected argument `mu` to be >= 0, but got {mu!r}")
        self.mu = mu

    def __call__(self, softmax_logits, multilabel_logits, target, pseudo_labels=None):
        if pseudo_labels is None:
            raise InvalidInputError("TwoHeadLoss needs `pseudo_labels` (see avgk_lightning.functional.pseudo_labels)")
        cross_entropy = F.cross_entropy(softmax_logits, target)
        binary_cross_entropy = F.binary_cross_entropy_with_logits(
            multilabel_logits, pseudo_labels.to(multilabel_logits.dtype)
        )
        return {
            "loss": cross_entropy + self.mu * binary_cross_entropy,
            "cross_entropy": cross_entropy,
            "binary_cross_entropy": binary_cross_entropy,
        }


LOSSES: dict[str, type[AverageKLoss]] = {loss.name: loss for loss in (SoftmaxLoss, TwoHeadLoss)}


def build_loss(method: str, mu: float = 1.0) -> AverageKLoss:
    """The loss registered under `method`.

    Example:
        >>> build_loss("two_head").set_head
        'multilabel'
    """
    if method not in LOSSES:
        raise InvalidInputError(f"Expected argument `method` to be one of {sorted(LOSSES)}, but got {method!r}")
    return TwoHeadLoss(mu) if method == "two_head" else LOSSES[method]()
