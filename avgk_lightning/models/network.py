"""The two-headed network: a backbone, a softmax head and a multi-label head on the same features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch  # noqa: F401  (used by the doctest)
from torch import Tensor, nn

__all__ = ["HEADS", "TwoHeadNetwork"]

#: the network's heads: ``softmax`` (scores by softmax) and ``multilabel`` (scores by sigmoid)
HEADS = ("softmax", "multilabel")


class TwoHeadNetwork(nn.Module):
    """Backbone features shared by two linear heads of L outputs each.

    ``forward(x)`` returns ``(softmax_logits, multilabel_logits)``; :meth:`scores` turns logits into each
    head's scores: softmax probabilities for the softmax head, sigmoid scores for the multi-label head.
    The module, the exported predictor and ``predict`` all read scores through it.

    Args:
        backbone: a module mapping images to (B, `feature_width`) features.
        feature_width: the width of the backbone's features.
        num_classes: number of classes L.

    Example:
        >>> network = TwoHeadNetwork(nn.Flatten(), feature_width=12, num_classes=5)
        >>> scores = network.scores(torch.randn(2, 3, 2, 2), heads=["softmax"])
        >>> tuple(scores["softmax"].shape), round(float(scores["softmax"].sum().detach()), 4)
        ((2, 5), 2.0)
    """

    def __init__(self, backbone: nn.Module, feature_width: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.softmax_head = nn.Linear(feature_width, num_classes)
        self.multilabel_head = nn.Linear(feature_width, num_classes)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(images)
        return self.softmax_head(features), self.multilabel_head(features)

    def head(self, name: Literal["softmax", "multilabel"]) -> nn.Linear:
        """The linear layer of head `name`."""
        return self.softmax_head if name == "softmax" else self.multilabel_head

    @staticmethod
    def head_scores(name: str, logits: Tensor) -> Tensor:
        """Scores of head `name` from its logits, in float32: softmax or sigmoid."""
        return logits.float().softmax(dim=1) if name == "softmax" else logits.float().sigmoid()

    def scores(self, images: Tensor, heads: Iterable[str] = HEADS) -> dict[str, Tensor]:
        """The scores of each head of `heads` for a batch of images (one backbone pass)."""
        logits = dict(zip(HEADS, self(images)))
        return {name: self.head_scores(name, logits[name]) for name in heads}
