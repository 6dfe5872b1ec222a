"""SmallResNet: the CIFAR ResNet of He et al. (3x3 stem, three stages, global average pooling) for small images."""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from torch import Tensor, nn

from avgk_lightning.checks import check_integer
from avgk_lightning.models.scratch import ScratchModel, scratch_model_arguments

__all__ = ["SmallResNet", "small_resnet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the input (a 1x1 projection where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        # He et al.'s option B: a 1x1 projection where the shape changes, the identity elsewhere.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        return (self.body(x) + self.shortcut(x)).relu()


class SmallResNet(ScratchModel):
    """A 3x3 stem, three stages of `blocks` basic blocks (`width`, 2·`width`, 4·`width` channels, the last two
    halving the resolution), then global average pooling: ``num_features = 4 * width``.

    Unlike :class:`~avgk_lightning.models.SmallVGG`, whose hidden fully connected layer holds most of its
    parameters, its features come from pooling a convolutional map: a different inductive bias for the
    same small images, and few parameters. ``width=16, blocks=3`` is He et al.'s ResNet-20 for CIFAR; the
    default (``width=8, blocks=1``, a narrow ResNet-8) costs about as much as SmallVGG to train on a CPU. The convolutions are initialised as in torchvision's ResNet (Kaiming normal,
    fan out). It follows timm's model interface (``num_classes=0`` returns the features).

    Args:
        num_classes: classifier outputs; 0 for none (pooled features).
        in_chans: input channels.
        width: channels of the first stage.
        blocks: basic blocks per stage.
        drop_rate: dropout before the classifier.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("small_resnet", num_classes=0)
        >>> tuple(model(torch.zeros(2, 3, 28, 28)).shape), model.num_features
        ((2, 32), 32)
    """

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, width: int = 8, blocks: int = 1, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        check_integer("width", width, minimum=1)
        check_integer("blocks", blocks, minimum=1)
        self.num_features = self.head_hidden_size = 4 * width
        self.drop_rate = drop_rate
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.set_head(num_classes)
        self.pretrained_cfg = {"classifier": "head", "input_size": (in_chans, 32, 32)}

    def pool(self, x: Tensor) -> Tensor:
        return nn.functional.dropout(x.mean(dim=(2, 3)), self.drop_rate, self.training)


@register_model
def small_resnet(pretrained: bool = False, **kwargs: Any) -> SmallResNet:
    """SmallResNet with 8/16/32 channels and one basic block per stage (a narrow ResNet-8, 0.02 M parameters)."""
    return SmallResNet(**scratch_model_arguments("small_resnet", pretrained, kwargs))
