"""DenseNet-BC for 32x32 images (Huang et al., 2017): the CIFAR-100 network of the paper's reference code."""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from avgk_lightning.checks import check_integer, check_number
from avgk_lightning.data.cifar import MEAN, STD
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.models.scratch import ScratchModel, scratch_model_arguments

__all__ = ["DenseNetBC", "densenet_bc_40_40"]


def _norm_act_conv(in_channels: int, out_channels: int, kernel_size: int, drop_rate: float) -> list[nn.Module]:
    """Batch norm, ReLU, a bias-free convolution keeping the spatial size, then dropout when `drop_rate` > 0."""
    layers: list[nn.Module] = [
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    ]
    return [*layers, nn.Dropout(drop_rate)] if drop_rate > 0 else layers


class _DenseLayer(nn.Module):
    """A bottleneck layer: 1x1 convolution to 4·growth channels, 3x3 to growth; its input and output concatenated."""

    def __init__(self, in_channels: int, growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_norm_act_conv(in_channels, 4 * growth_rate, 1, drop_rate),
            *_norm_act_conv(4 * growth_rate, growth_rate, 3, drop_rate),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def _check_arguments(depth: object, growth_rate: object, compression: object, drop_rate: object) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise InvalidInputError(
            f"Expected argument `depth` to be 6·n + 4 with n >= 1 bottleneck layers per dense block "
            f"(10, 16, 22, ..., 40, ..., 100), but got {depth!r}: pass a depth with (depth - 4) divisible by 6"
        )
    check_integer("growth_rate", growth_rate)
    check_number("compression", compression, 0, 1, closed="(]")
    check_number("drop_rate", drop_rate, 0, 1, closed="[)")


class DenseNetBC(ScratchModel):
    """DenseNet-BC for 32x32 images: three dense blocks of bottleneck layers with compressing transitions.

    A 3x3 convolution to 2·`growth_rate` channels; three dense blocks of (`depth` - 4) / 6 bottleneck
    layers (BN-ReLU-Conv1x1 to 4·`growth_rate`, BN-ReLU-Conv3x3 to `growth_rate`, each followed by
    dropout when `drop_rate` > 0, the new maps concatenated to the input); between the blocks a
    transition BN-ReLU-Conv1x1 to floor(channels·`compression`) channels, dropout, 2x2 average pooling;
    a final BN-ReLU and global average pooling give the features (``num_features`` wide). The weights
    are initialised as in the reference code: convolutions from N(0, 2 / (k²·out_channels)), batch norm
    scale 1 and shift 0, classifier bias 0. It follows timm's model interface (``num_classes=0`` returns
    the pooled features; ``forward_features``, ``forward_head``, ``reset_classifier``).

    Args:
        depth: 6·n + 4 for n bottleneck layers per dense block (40 in the reference code).
        growth_rate: channels each bottleneck layer adds (40 in the reference code).
        compression: share of channels a transition keeps, in (0, 1].
        drop_rate: dropout after every convolution of the blocks and transitions, in [0, 1).
        num_classes: classifier outputs; 0 for none (pooled features).
        in_chans: input channels.

    Example:
        >>> model = DenseNetBC(depth=16, growth_rate=4, num_classes=0)
        >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), model.num_features
        ((2, 16), 16)
    """

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 40,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        _check_arguments(depth, growth_rate, compression, drop_rate)
        layers_per_block = (depth - 4) // 6
        channels = 2 * growth_rate
        stages: list[nn.Module] = [nn.Conv2d(in_chans, channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                stages.append(_DenseLayer(channels, growth_rate, drop_rate))
                channels += growth_rate
            if block < 2:
                kept = math.floor(channels * compression)
                if kept == 0:
                    raise InvalidInputError(
                        f"Argument `compression` = {compression} keeps no channel of the {channels} after dense "
                        f"block {block + 1}: pass a larger `compression` or `growth_rate`"
                    )
                stages += [*_norm_act_conv(channels, kept, 1, drop_rate), nn.AvgPool2d(2)]
                channels = kept
        stages += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = channels
        self.set_head(num_classes)
        self.pretrained_cfg = {
            "classifier": "head",
            "input_size": (in_chans, 32, 32),
            "mean": MEAN,
            "std": STD,
            "crop_pct": 1.0,
        }
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def classifier(self, num_classes: int) -> nn.Module:
        head = super().classifier(num_classes)
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.bias)  # as the reference code initialises its classifier
        return head

    def pool(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


@register_model
def densenet_bc_40_40(pretrained: bool = False, **kwargs: Any) -> DenseNetBC:
    """DenseNet-BC of depth 40, growth rate 40, compression 0.5: 440 features, 1.9 M parameters with 100 classes."""
    fixed = {"depth": 40, "growth_rate": 40, "compression": 0.5}
    overridden = sorted(set(fixed) & set(kwargs))
    if overridden:
        raise InvalidInputError(
            f"densenet_bc_40_40 fixes {', '.join(f'`{name}`' for name in overridden)}: build "
            "avgk_lightning.models.DenseNetBC(depth=..., growth_rate=..., compression=...) for another size"
        )
    return DenseNetBC(**fixed, **scratch_model_arguments("densenet_bc_40_40", pretrained, kwargs))
