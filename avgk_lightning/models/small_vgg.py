"""SmallVGG: a VGG-style convolutional network for 28x28 and 32x32 images that trains fast on a CPU."""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from torch import Tensor, nn

from avgk_lightning.models.scratch import ScratchModel, scratch_model_arguments

__all__ = ["SmallVGG", "small_vgg"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallVGG(ScratchModel):
    """Three stages of a 3x3 convolution, batch norm, ReLU and 2x2 max-pooling, then one hidden layer.

    The stages have `width`, 2·`width` and 4·`width` channels; the last feature map is flattened (3x3
    for 28x28 inputs, 4x4 for 32x32) into a fully connected layer of `hidden` units with batch norm
    and ReLU, whose output are the pooled features (``num_features = hidden``). Most parameters sit
    in that layer: the network is cheap to run yet can fit (memorise) noisy training labels within a
    few dozen epochs, the regime in which the paper's CIFAR-100 runs end. It follows timm's model
    interface (``num_classes=0`` returns the features; ``forward_features``, ``forward_head``,
    ``reset_classifier``).

    Args:
        num_classes: classifier outputs; 0 for none (pooled features).
        in_chans: input channels.
        width: channels of the first stage.
        hidden: width of the hidden fully connected layer (the feature width).
        drop_rate: dropout before the classifier.
        image_size: side of the square inputs (28, 32, ...): the flattened map is (image_size // 8)² wide.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("small_vgg", num_classes=0)
        >>> tuple(model(torch.zeros(2, 3, 28, 28)).shape), model.num_features
        ((2, 512), 512)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width: int = 16,
        hidden: int = 512,
        drop_rate: float = 0.0,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        self.num_features = self.head_hidden_size = hidden
        self.drop_rate = drop_rate
        side = image_size // 8
        self.features = nn.Sequential(
            *_conv_bn_relu(in_chans, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.pre_logits = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * side * side, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.set_head(num_classes)
        self.pretrained_cfg = {"classifier": "head", "input_size": (in_chans, image_size, image_size)}

    def pool(self, x: Tensor) -> Tensor:
        return nn.functional.dropout(self.pre_logits(x), self.drop_rate, self.training)


@register_model
def small_vgg(pretrained: bool = False, **kwargs: Any) -> SmallVGG:
    """SmallVGG with 16/32/64 channels and 512 hidden units (0.32 M parameters at 28x28, the classifier excluded)."""
    return SmallVGG(**scratch_model_arguments("small_vgg", pretrained, kwargs))
