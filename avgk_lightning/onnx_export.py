"""The set predictor as one ONNX file: written with torch's ONNX exporter, run with onnxruntime.

The graph takes a float32 ``images`` input (N, C, H, W), N dynamic, and returns ``scores`` (float32,
the set head's sigmoid or softmax scores) and ``sets`` (bool, ``scores >= λ_K``). The model's
``metadata_props`` hold k, threshold (λ_K), set_head, method, class_names and input_shape: set_head and
method as plain text, the others as JSON. Needs the ``export`` extra: ``pip install "avgk-lightning[export]"``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from avgk_lightning.atomic import atomic_path
from avgk_lightning.errors import MissingDependencyError

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "load_onnx_predictor", "write_onnx"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "sets")
_TEXT_KEYS = ("set_head", "method")


def _require(package: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise MissingDependencyError(
            f'{purpose} needs the {package} package ({error}): pip install "avgk-lightning[export]"'
        ) from error


def write_onnx(predictor: nn.Module, metadata: dict[str, Any], output: Path, input_shape: Sequence[int]) -> None:
    """Export `predictor` (a SetPredictor, on the CPU) to `output`, batch axis dynamic, `metadata` in metadata_props."""
    for package in ("onnx", "onnxscript"):
        _require(package, "--format onnx")
    # The torch.export-based exporter (dynamo=True; needs onnx and onnxscript): the default since torch 2.9
    # and the one maintained. The TorchScript-based exporter (dynamo=False) also exports this graph with
    # torch 2.14, but warns that it is deprecated and will be removed.
    program = torch.onnx.export(
        predictor,
        (torch.zeros(2, *input_shape),),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},  # SetPredictor.forward(images)
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props.update(
        {key: value if key in _TEXT_KEYS else json.dumps(value) for key, value in metadata.items()}
    )
    with atomic_path(output, "export") as partial:
        program.save(str(partial), external_data=False)  # one file: the weights inside, as in the TorchScript export


def load_onnx_predictor(path: str | Path, providers: Sequence[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime InferenceSession of an exported ONNX predictor, and its metadata as :func:`load_set_predictor`.

    Args:
        path: the ``.onnx`` file of ``python -m avgk_lightning.export CKPT --format onnx``.
        providers: onnxruntime execution providers, in order of preference; default all available.

    Example:
        >>> import tempfile
        >>> from avgk_lightning import TwoHeadModule
        >>> from avgk_lightning.export import export_set_predictor
        >>> model = TwoHeadModule(num_classes=5, backbone="small_vgg", k=2, predict_head="multilabel")
        >>> model.calibration.average_k = {"multilabel": {2.0: 0.5}}
        >>> path = export_set_predictor(model, Path(tempfile.mkdtemp()) / "p.onnx", input_shape=(3, 28, 28),
        ...                             file_format="onnx")
        >>> session, metadata = load_onnx_predictor(path)
        >>> scores, sets = session.run(None, {"images": torch.rand(3, 3, 28, 28).numpy()})
        >>> scores.shape, sets.dtype, metadata["k"], metadata["threshold"], metadata["set_head"]
        ((3, 5), dtype('bool'), 2.0, 0.5, 'multilabel')
    """
    onnxruntime = _require("onnxruntime", "load_onnx_predictor")
    session = onnxruntime.InferenceSession(str(path), providers=providers or onnxruntime.get_available_providers())
    stored = session.get_modelmeta().custom_metadata_map
    return session, {key: value if key in _TEXT_KEYS else json.loads(value) for key, value in stored.items()}
