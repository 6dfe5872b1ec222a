"""The library's own backbones: registered with timm, sized as specified."""

import itertools

import pytest
import timm
import torch

import avgk_lightning  # noqa: F401  (registers the backbones)
from avgk_lightning import TwoHeadModule


def _small_vgg_parameters(width: int, hidden: int, in_chans: int, side: int) -> int:
    """Parameters of SmallVGG counted from its specification: 3 conv+BN stages, a hidden FC+BN layer."""
    widths = [in_chans, width, 2 * width, 4 * width]
    convolutions = sum(9 * a * b + 2 * b for a, b in itertools.pairwise(widths))  # 3x3 kernels, BN scale and shift
    hidden_layer = 4 * width * (side // 8) ** 2 * hidden + 2 * hidden  # no bias (BN follows), BN scale and shift
    return convolutions + hidden_layer


@pytest.mark.parametrize("width, hidden, side", [(16, 512, 28), (8, 64, 32)])
def test_small_vgg_has_the_specified_width_and_parameters(width, hidden, side):
    model = timm.create_model("small_vgg", num_classes=0, width=width, hidden=hidden, image_size=side)
    features = model(torch.zeros(2, 3, side, side))
    assert tuple(features.shape) == (2, hidden) and model.num_features == model.head_hidden_size == hidden
    assert sum(p.numel() for p in model.parameters()) == _small_vgg_parameters(width, hidden, 3, side)
    classifier = timm.create_model("small_vgg", num_classes=10, width=width, hidden=hidden, image_size=side)
    assert tuple(classifier(torch.zeros(2, 3, side, side)).shape) == (2, 10)


def test_small_vgg_is_listed_by_timm_and_usable_by_name_in_the_module():
    assert "small_vgg" in timm.list_models("small_*")
    model = TwoHeadModule(num_classes=10, backbone="small_vgg", k=2)
    softmax_logits, multilabel_logits = model(torch.zeros(4, 3, 28, 28))
    assert softmax_logits.shape == multilabel_logits.shape == (4, 10)
    assert model.network.softmax_head.in_features == 512


def test_small_vgg_refuses_pretrained_weights():
    with pytest.raises(ValueError, match="small_vgg has no pretrained weights"):
        timm.create_model("small_vgg", pretrained=True)
