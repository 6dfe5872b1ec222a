"""The two-headed network: a backbone, a softmax head and a multi-label head (or one per K) on the same features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["HEADS", "TwoHeadNetwork"]

#: the network's heads: ``softmax`` (scores by softmax) and ``multilabel`` (scores by sigmoid)
HEADS = ("softmax", "multilabel")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by `scale` backward."""

    @staticmethod
    def forward(ctx, tensor: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class TwoHeadNetwork(nn.Module):
    """Backbone features shared by a softmax head of L outputs and a multi-label head of L outputs per K.

    ``forward(x)`` returns ``(softmax_logits, multilabel_logits)``; :meth:`scores` turns logits into each
    head's scores: softmax probabilities for the softmax head, sigmoid scores for the multi-label head.
    The module, the exported predictor and ``predict`` all read scores through it.

    With ``multilabel_heads = n > 1`` (one training serving n values of K) the multi-label logits are
    (B, n, L): head i is rows ``i·L .. (i+1)·L - 1`` of one linear layer. The loss averages its terms
    over the n heads, so that the backbone gets the mean of their gradients, as large as one head's;
    in training, the gradient that reaches the heads' own weights is multiplied by n, so that each head
    learns at the pace of the head of a model trained for its K alone.

    Args:
        backbone: a module mapping images to (B, `feature_width`) features.
        feature_width: the width of the backbone's features.
        num_classes: number of classes L.
        multilabel_heads: number of multi-label heads n (one per K).

    Example:
        >>> network = TwoHeadNetwork(nn.Flatten(), feature_width=12, num_classes=5)
        >>> scores = network.scores(torch.randn(2, 3, 2, 2), heads=["softmax"])
        >>> tuple(scores["softmax"].shape), round(float(scores["softmax"].sum().detach()), 4)
        ((2, 5), 2.0)
        >>> tuple(TwoHeadNetwork(nn.Flatten(), 12, 5, multilabel_heads=3)(torch.randn(2, 3, 2, 2))[1].shape)
        (2, 3, 5)
    """

    def __init__(self, backbone: nn.Module, feature_width: int, num_classes: int, multilabel_heads: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes, self.multilabel_heads = num_classes, multilabel_heads
        self.softmax_head = nn.Linear(feature_width, num_classes)
        self.multilabel_head = nn.Linear(feature_width, num_classes * multilabel_heads)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(images)
        if self.multilabel_heads == 1:
            return self.softmax_head(features), self.multilabel_head(features)
        heads = self.multilabel_heads
        if self.training and torch.is_grad_enabled():
            multilabel_logits = self.multilabel_head(_ScaleGradient.apply(features, 1.0 / heads))
            multilabel_logits = _ScaleGradient.apply(multilabel_logits, float(heads))
        else:
            multilabel_logits = self.multilabel_head(features)
        return self.softmax_head(features), multilabel_logits.view(-1, heads, self.num_classes)

    def head(self, name: Literal["softmax", "multilabel"], index: int | None = None) -> nn.Linear:
        """The linear layer of head `name`; with several multi-label heads, `index` picks one (a copy)."""
        if name == "softmax":
            return self.softmax_head
        if self.multilabel_heads == 1 or index is None:
            return self.multilabel_head
        rows = slice(index * self.num_classes, (index + 1) * self.num_classes)
        layer = nn.Linear(self.multilabel_head.in_features, self.num_classes)
        layer.load_state_dict({"weight": self.multilabel_head.weight[rows], "bias": self.multilabel_head.bias[rows]})
        return layer.to(self.multilabel_head.weight.device)

    @staticmethod
    def head_scores(name: str, logits: Tensor) -> Tensor:
        """Scores of head `name` from its logits, in float32: softmax or sigmoid."""
        return logits.float().softmax(dim=1) if name == "softmax" else logits.float().sigmoid()

    def scores(self, images: Tensor, heads: Iterable[str] = HEADS) -> dict[str, Tensor]:
        """The scores of each head of `heads` for a batch of images (one backbone pass).

        The multi-label scores are (B, n, L) where the network has n > 1 multi-label heads.
        """
        logits = dict(zip(HEADS, self(images)))
        return {name: self.head_scores(name, logits[name]) for name in heads}
