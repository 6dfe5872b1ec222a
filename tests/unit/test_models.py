"""The library's own backbones: registered with timm, sized as specified."""

import itertools

import pytest
import timm
import torch

import avgk_lightning  # noqa: F401  (registers the backbones)
from avgk_lightning import TwoHeadModule
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.models import DenseNetBC


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


def test_backbone_options_reach_the_timm_constructor_and_the_saved_hyperparameters_rebuild_them():
    model = TwoHeadModule(num_classes=10, backbone="small_vgg", k=2, backbone_options={"hidden": 32, "width": 8})
    assert model.network.softmax_head.in_features == model.network.multilabel_head.in_features == 32
    reference = timm.create_model("small_vgg", num_classes=0, hidden=32, width=8)
    assert sum(p.numel() for p in model.network.backbone.parameters()) == sum(p.numel() for p in reference.parameters())
    rebuilt = TwoHeadModule(**model.hparams)  # what a checkpoint's saved hyperparameters rebuild
    rebuilt.load_state_dict(model.state_dict())  # strict: the same layers and shapes
    assert rebuilt.hparams.backbone_options == {"hidden": 32, "width": 8}
    with pytest.raises(
        InvalidInputError,
        match=r"'small_vgg' does not take the option\(s\) \{'depth': 3\} \(argument `backbone_options`\)",
    ):
        TwoHeadModule(num_classes=10, backbone="small_vgg", backbone_options={"depth": 3})


def test_small_vgg_refuses_pretrained_weights():
    with pytest.raises(ValueError, match="small_vgg has no pretrained weights"):
        timm.create_model("small_vgg", pretrained=True)


def _small_resnet_parameters(width: int, blocks: int, in_chans: int) -> int:
    """Parameters of SmallResNet counted from its specification: a 3x3 stem, three stages of basic blocks."""
    parameters = 9 * in_chans * width + 2 * width  # the stem convolution (no bias) and its BN
    channels = width
    for stage, out in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks):
            parameters += 9 * channels * out + 2 * out + 9 * out * out + 2 * out  # two 3x3 convolutions, two BNs
            if channels != out or (stage > 0 and block == 0):
                parameters += channels * out + 2 * out  # the 1x1 projection and its BN
            channels = out
    return parameters


@pytest.mark.parametrize("width, blocks, side", [(8, 1, 28), (16, 3, 32)])
def test_small_resnet_has_the_specified_width_and_parameters(width, blocks, side):
    model = timm.create_model("small_resnet", num_classes=0, width=width, blocks=blocks)
    assert tuple(model(torch.zeros(2, 3, side, side)).shape) == (2, 4 * width) and model.num_features == 4 * width
    assert sum(p.numel() for p in model.parameters()) == _small_resnet_parameters(width, blocks, 3)
    assert tuple(model.forward_features(torch.zeros(2, 3, side, side)).shape[2:]) == ((side + 3) // 4,) * 2
    if (width, blocks) == (16, 3):
        # He et al.'s ResNet-20 (0.27 M: 269,722 with its 10-class classifier of 650 and zero-padded identity
        # shortcuts) plus the two 1x1 projections and their BNs (16·32 + 64 and 32·64 + 128 parameters)
        assert sum(p.numel() for p in model.parameters()) == 269_722 - 650 + (16 * 32 + 64) + (32 * 64 + 128)


def test_small_resnet_is_usable_by_name_in_the_module_and_refuses_bad_arguments():
    assert "small_resnet" in timm.list_models("small_*")
    model = TwoHeadModule(num_classes=10, backbone="small_resnet", k=2)
    softmax_logits, multilabel_logits = model(torch.zeros(4, 3, 28, 28))
    assert softmax_logits.shape == multilabel_logits.shape == (4, 10)
    assert model.network.softmax_head.in_features == 32
    with pytest.raises(ValueError, match="small_resnet has no pretrained weights"):
        timm.create_model("small_resnet", pretrained=True)
    with pytest.raises(InvalidInputError, match="`blocks` to be a positive integer, but got 0"):
        timm.create_model("small_resnet", blocks=0)


def _densenet_bc_size(depth: int, growth: int, compression: float, num_classes: int) -> tuple[int, int]:
    """(pooled feature width, parameters) of DenseNet-BC on RGB inputs, counted from its specification.

    Convolutions have no bias; every batch norm has a scale and a shift per channel (its running statistics
    are buffers, not parameters); the classifier has a bias.
    """
    layers_per_block = (depth - 4) // 6
    channels = 2 * growth
    parameters = 3 * channels * 3 * 3  # the first 3x3 convolution
    for block in range(3):
        for _ in range(layers_per_block):
            bottleneck = 2 * channels + channels * 4 * growth  # BN, 1x1 convolution to 4·growth
            bottleneck += 2 * 4 * growth + 4 * growth * growth * 3 * 3  # BN, 3x3 convolution to growth
            parameters += bottleneck
            channels += growth
        if block < 2:
            kept = int(channels * compression)  # floor of a positive number
            parameters += 2 * channels + channels * kept  # BN, 1x1 convolution
            channels = kept
    parameters += 2 * channels  # the final BN
    if num_classes:
        parameters += channels * num_classes + num_classes
    return channels, parameters


@pytest.mark.parametrize("num_classes", [100, 0])
def test_densenet_bc_40_40_has_the_specified_width_and_parameters(num_classes):
    model = timm.create_model("densenet_bc_40_40", num_classes=num_classes)
    width, parameters = _densenet_bc_size(40, 40, 0.5, num_classes)
    assert width == 440 and model.num_features == model.head_hidden_size == 440
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert parameters == pytest.approx(1.9e6, rel=0.05)
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, num_classes or 440)


@pytest.mark.parametrize("depth, growth, compression", [(16, 4, 0.5), (22, 6, 1.0), (10, 5, 0.3)])
def test_densenet_bc_arguments_give_the_width_and_parameters_of_the_formula(depth, growth, compression):
    model = DenseNetBC(depth=depth, growth_rate=growth, compression=compression, num_classes=7)
    width, parameters = _densenet_bc_size(depth, growth, compression, 7)
    assert model.num_features == width and sum(p.numel() for p in model.parameters()) == parameters
    features = model.forward_head(model.forward_features(torch.zeros(2, 3, 32, 32)), pre_logits=True)
    assert tuple(features.shape) == (2, width)
    model.reset_classifier(0)
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, width) and model.get_classifier() is model.head


@pytest.mark.parametrize(
    "arguments, name",
    [
        ({"depth": 41}, "depth"),
        ({"depth": 4}, "depth"),
        ({"depth": 40.0}, "depth"),
        ({"growth_rate": 0}, "growth_rate"),
        ({"compression": 0}, "compression"),
        ({"compression": 1.5}, "compression"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"depth": 10, "growth_rate": 1, "compression": 0.1}, "compression"),  # keeps no channel
    ],
)
def test_densenet_bc_refuses_bad_arguments_naming_them(arguments, name):
    with pytest.raises(InvalidInputError, match=f"`{name}`"):
        DenseNetBC(**arguments)


def test_densenet_bc_40_40_refuses_another_size_and_pretrained_weights():
    with pytest.raises(InvalidInputError, match="densenet_bc_40_40 fixes `depth`, `growth_rate`: build"):
        timm.create_model("densenet_bc_40_40", depth=100, growth_rate=12)
    with pytest.raises(InvalidInputError, match="densenet_bc_40_40 has no pretrained weights"):
        timm.create_model("densenet_bc_40_40", pretrained=True)


def test_densenet_bc_drops_out_only_in_training():
    torch.manual_seed(0)
    model = timm.create_model("densenet_bc_40_40", num_classes=0, drop_rate=0.2)
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 3 * 6 * 2 + 2
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(images), model(images))
        assert torch.equal(model.eval()(images), model(images))
    assert not any(isinstance(m, torch.nn.Dropout) for m in DenseNetBC(depth=10, growth_rate=2).modules())


def test_densenet_bc_is_initialised_as_the_reference_code():
    torch.manual_seed(0)
    model = timm.create_model("densenet_bc_40_40", num_classes=100)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.weight.numel() > 10_000:
            expected = (2 / (module.kernel_size[0] * module.kernel_size[1] * module.out_channels)) ** 0.5
            assert module.weight.mean().item() == pytest.approx(0, abs=0.05 * expected)
            assert module.weight.std().item() == pytest.approx(expected, rel=0.05)
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert bool((module.weight == 1).all() and (module.bias == 0).all())
    assert bool((model.get_classifier().bias == 0).all())


def test_densenet_bc_40_40_is_listed_by_timm_with_cifar_inputs_and_usable_by_name_in_the_module():
    assert timm.list_models("densenet_bc*") == ["densenet_bc_40_40"]
    config = timm.data.resolve_model_data_config(timm.create_model("densenet_bc_40_40", num_classes=0))
    assert config["input_size"] == (3, 32, 32) and config["crop_pct"] == 1.0
    assert config["mean"] == pytest.approx([125.3 / 255, 123.0 / 255, 113.9 / 255])
    assert config["std"] == pytest.approx([63.0 / 255, 62.1 / 255, 66.7 / 255])
    model = TwoHeadModule(num_classes=100, backbone="densenet_bc_40_40", k=3)
    assert model.network.softmax_head.in_features == model.network.multilabel_head.in_features == 440
    softmax_logits, multilabel_logits = model(torch.zeros(2, 3, 32, 32))
    assert softmax_logits.shape == multilabel_logits.shape == (2, 100)
