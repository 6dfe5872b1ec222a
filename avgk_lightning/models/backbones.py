"""Backbone construction: a timm model by name, local weight files, and the small-input stem for 32x32 images."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = ["create_backbone", "load_backbone_weights"]


def load_backbone_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load a timm or torchvision weights file into a classifier-less timm model, refusing any mismatch.

    timm's own pretrained loading is lenient (keys it cannot place are only logged); here every weight
    of the backbone must come from the file, with its shape. The file's classifier is dropped.
    """
    import timm

    try:
        state_dict = timm.models.load_state_dict(str(path))
    except Exception as error:
        raise InvalidInputError(
            f"Cannot read backbone weights file {path} (argument `weights_path`): {error}"
        ) from error
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    classifier = model.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{head}." for head in ([classifier] if isinstance(classifier, str) else classifier))
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(prefixes)}
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        key for key in expected if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label}: {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise InvalidInputError(
            f"Backbone weights file {path} does not match backbone {name!r} ({details}): pass the weights of "
            f"{name!r} (argument `weights_path`) or the backbone they belong to (argument `backbone`)."
        )
    model.load_state_dict(state_dict)


def _use_small_input_stem(model: nn.Module, name: str) -> None:
    """Replace a timm ResNet's 7x7 stride-2 stem convolution and max-pool by one 3x3 stride-1 convolution."""
    stem = getattr(model, "conv1", None)
    if not isinstance(stem, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise InvalidInputError(
            f"`small_input_stem` applies to timm ResNets (a `conv1` convolution and a `maxpool`); "
            f"{name!r} has none: override `build_backbone` instead"
        )
    model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights_path: str | None = None,
    small_input_stem: bool = False,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """The timm model `name` without its classifier (pooled features), and its feature width.

    The width is ``head_hidden_size`` where the model has one (it differs from ``num_features`` for e.g.
    MobileNetV3), else ``num_features``. `weights_path` loads a local timm or torchvision weights file
    (every backbone weight must match); `pretrained` without it downloads timm's weights;
    `small_input_stem` makes a ResNet's stem fit 32x32 inputs (the usual CIFAR ResNet); `options` are
    the model's own keyword arguments, handed to ``timm.create_model`` (e.g. ``drop_rate``, or
    ``hidden`` of ``small_vgg``).

    Example:
        >>> backbone, width = create_backbone("resnet18", small_input_stem=True)
        >>> width, type(backbone.maxpool).__name__
        (512, 'Identity')
        >>> create_backbone("small_vgg", options={"hidden": 32})[1]
        32
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close timm names: {', '.join(close)}." if close else ""
        raise InvalidInputError(f"Unknown backbone {name!r} (argument `backbone`).{hint} See timm.list_models().")
    if weights_path is not None and not Path(weights_path).expanduser().is_file():
        raise MissingFileError(
            f"Backbone weights file not found: {weights_path} (argument `weights_path`). Save the weights "
            f"of {name!r} there (e.g. on a machine with internet: torch.save(timm.create_model({name!r}, "
            "pretrained=True).state_dict(), PATH)), or pass `weights_path: null` to train from scratch."
        )
    download = pretrained and weights_path is None
    try:
        model = timm.create_model(name, pretrained=download, num_classes=0, **dict(options or {}))
    except TypeError as error:  # an option the model's constructor does not take
        raise InvalidInputError(
            f"Backbone {name!r} does not take the option(s) {dict(options or {})} (argument `backbone_options`): "
            f"{error}. Pass the keyword arguments of its constructor only."
        ) from error
    except OSError as error:  # the hub is unreachable (no network) or the weights are not cached
        if not download:
            raise
        raise InvalidInputError(
            f"Cannot download the pretrained weights of {name!r} (argument `pretrained: true`): {error}. "
            f"Without network, save them on a machine with internet (torch.save(timm.create_model({name!r}, "
            "pretrained=True).state_dict(), PATH)) and pass --model.init_args.weights_path PATH."
        ) from error
    if weights_path is not None:
        load_backbone_weights(model, Path(weights_path).expanduser(), name)
    if small_input_stem:
        _use_small_input_stem(model, name)
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(width)
