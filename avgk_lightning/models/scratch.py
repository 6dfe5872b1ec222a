"""The base of the library's own timm models: networks without pretrained weights, in timm's model interface."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from avgk_lightning.errors import InvalidInputError

__all__ = ["ScratchModel", "scratch_model_arguments"]

# Arguments timm's create_model hands to every entry point; a model without pretrained weights has none to place.
_TIMM_LOADING_ARGUMENTS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def scratch_model_arguments(name: str, pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments a timm entry point of a model without pretrained weights passes on to its class.

    timm's weight-loading arguments are dropped; `pretrained` is refused, naming the model `name`.

    Example:
        >>> scratch_model_arguments("small_vgg", False, {"num_classes": 0, "pretrained_cfg": None})
        {'num_classes': 0}
    """
    if pretrained:
        raise InvalidInputError(f"{name} has no pretrained weights: pass `pretrained: false` (train it from scratch)")
    return {key: value for key, value in kwargs.items() if key not in _TIMM_LOADING_ARGUMENTS}


class ScratchModel(nn.Module):
    """``features`` (a feature map), :meth:`pool` (to ``num_features`` per image), then the classifier ``head``.

    timm's interface: ``num_classes=0`` makes ``head`` the identity (``forward`` returns the pooled
    features), ``forward_features`` / ``forward_head(pre_logits=...)``, ``get_classifier`` and
    ``reset_classifier``. Subclasses build ``features``, set ``num_features`` and call :meth:`set_head`.

    Example:
        >>> class Tiny(ScratchModel):
        ...     def __init__(self, num_classes):
        ...         super().__init__()
        ...         self.features, self.num_features = nn.Conv2d(3, 4, 1), 4
        ...         self.set_head(num_classes)
        ...     def pool(self, x):
        ...         return x.mean(dim=(2, 3))
        >>> import torch
        >>> tuple(Tiny(num_classes=0)(torch.zeros(2, 3, 8, 8)).shape)
        (2, 4)
    """

    features: nn.Module
    num_features: int

    def pool(self, x: Tensor) -> Tensor:
        """The (B, num_features) pre-logits of a feature map."""
        raise NotImplementedError

    def classifier(self, num_classes: int) -> nn.Module:
        """A linear classifier of `num_classes` outputs on the pooled features (the identity for 0)."""
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_head(self, num_classes: int) -> None:
        """Replace the classifier by one of `num_classes` outputs (0: none)."""
        self.num_classes = num_classes
        self.head = self.classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        self.set_head(num_classes)
