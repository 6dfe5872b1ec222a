"""Export the set predictor (backbone, set head and λ_K) as one TorchScript or ONNX file, usable without this package.

Usage::

    python -m avgk_lightning.export CHECKPOINT --output predictor.pt [--format torchscript|onnx] [--k 3]
        [--input-shape 3,224,224] [--model-class avgk_lightning.TwoHeadModule] [--overwrite]

TorchScript (the default; any --output name but ``.onnx``): the file loads with ``torch.jit.load(path)``
alone; calling it on a (N, C, H, W) batch, transformed as in evaluation, returns ``(scores, sets)``: the
set head's scores (sigmoid for the multi-label head, softmax for the softmax head) and the boolean (N, L)
mask ``scores >= λ_K``. K, λ_K and the class names travel in the file's ``avgk.json`` extra file
(``torch.jit.load(path, _extra_files=...)``). ONNX (``--format onnx``, a ``.onnx`` name, the ``export``
extra): the same outputs from an onnxruntime session, the metadata in the model's metadata_props
(:mod:`avgk_lightning.onnx_export`).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from avgk_lightning.atomic import atomic_path
from avgk_lightning.checkpoint import read_checkpoint
from avgk_lightning.checks import check_choice
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.models import TwoHeadNetwork
from avgk_lightning.module import TwoHeadModule
from avgk_lightning.onnx_export import write_onnx

__all__ = ["FORMATS", "SetPredictor", "check_output", "export_set_predictor", "load_set_predictor"]

_METADATA = "avgk.json"


class SetPredictor(nn.Module):
    """The deployable part of a TwoHeadModule: features, the head that makes the sets, and λ_K.

    Example:
        >>> model = TwoHeadModule(num_classes=5, k=2, predict_head="multilabel")
        >>> model.calibration.average_k = {"multilabel": {2.0: 0.5}}
        >>> scores, sets = SetPredictor(model, k=2).eval()(torch.randn(3, 3, 32, 32))
        >>> tuple(scores.shape), sets.dtype
        ((3, 5), torch.bool)
    """

    def __init__(self, module: TwoHeadModule, k: float | None = None, argument: str = "k") -> None:
        super().__init__()
        self.set_head = module.prediction_head(k, argument)
        self.backbone = module.network.backbone
        k = module.predict_k if k is None else float(k)
        index = module.ks.index(k) if self.set_head == "multilabel" and len(module.ks) > 1 else None
        self.head = module.network.head(self.set_head, index)  # of a multi-label head per K, the one of `k`
        self.register_buffer("threshold", torch.tensor(module.calibrated_threshold(k, argument), dtype=torch.float32))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        scores = TwoHeadNetwork.head_scores(self.set_head, self.head(self.backbone(images)))
        return scores, scores >= self.threshold


def _write_torchscript(predictor: SetPredictor, metadata: dict, output: Path, input_shape: Sequence[int]) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(predictor, torch.zeros(2, *input_shape))
    buffer = io.BytesIO()  # torch.jit.save aborts the process when a file write fails: write the bytes here
    torch.jit.save(traced, buffer, _extra_files={_METADATA: json.dumps(metadata)})
    with atomic_path(output, "export") as partial:
        partial.write_bytes(buffer.getbuffer())


_WRITERS = {"torchscript": _write_torchscript, "onnx": write_onnx}
FORMATS = tuple(_WRITERS)


def check_output(output: Path, file_format: str, overwrite: bool = True) -> None:
    """Raise unless `file_format` is known, `output` ends in .onnx exactly for ONNX, and exists only if `overwrite`.

    Example:
        >>> check_output(Path("predictor.pt"), "onnx")
        Traceback (most recent call last):
        ...
        avgk_lightning.errors.InvalidInputError: predictor.pt (argument --output) is not a .onnx name, which --format onnx needs: pass e.g. predictor.onnx.
    """
    check_choice("--format", file_format, FORMATS)
    if file_format == "onnx" and output.suffix != ".onnx":
        raise InvalidInputError(
            f"{output} (argument --output) is not a .onnx name, which --format onnx needs: "
            f"pass e.g. {output.with_suffix('.onnx')}."
        )
    if file_format != "onnx" and output.suffix == ".onnx":
        raise InvalidInputError(
            f"{output} (argument --output) is a .onnx name, but --format is {file_format}: "
            f"pass --format onnx, or e.g. {output.with_suffix('.pt')}."
        )
    if output.exists() and not overwrite:
        raise InvalidInputError(f"{output} exists (argument --output): pass another file name, or --overwrite.")


def export_set_predictor(
    module: TwoHeadModule,
    output: str | Path,
    k: float | None = None,
    input_shape: Sequence[int] = (3, 224, 224),
    file_format: str = "torchscript",
) -> Path:
    """Write :class:`SetPredictor` (with K, λ_K, class names) to `output` as TorchScript (traced) or ONNX.

    Both are traced on a CPU batch of `input_shape`; see the module's docstring for what the file holds.
    A copy is traced: `module` keeps its device and the train / eval mode of each part.
    """
    output = Path(output)
    check_output(output, file_format)
    predictor = copy.deepcopy(SetPredictor(module, k, argument="--k")).cpu().eval()
    metadata = {
        "k": module.predict_k if k is None else float(k),
        "threshold": float(predictor.threshold),
        "set_head": predictor.set_head,
        "method": module.method,
        "class_names": module.class_names or [str(index) for index in range(module.num_classes)],
        "input_shape": list(input_shape),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    _WRITERS[file_format](predictor, metadata, output, input_shape)
    return output


def load_set_predictor(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """The exported predictor and its metadata (k, threshold, set_head, method, class_names, input_shape)."""
    extra = {_METADATA: ""}
    predictor = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return predictor, json.loads(extra[_METADATA])


def _module_class(dotted: str) -> type[TwoHeadModule]:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        module_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise InvalidInputError(f"Cannot import {dotted!r} (argument --model-class): {error}") from error
    if not (isinstance(module_class, type) and issubclass(module_class, TwoHeadModule)):
        raise InvalidInputError(f"{dotted!r} (argument --model-class) is not a TwoHeadModule subclass")
    return module_class


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m avgk_lightning.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint of `train.py fit` (best.ckpt or last.ckpt)")
    parser.add_argument("--output", required=True, help="the file to write (a .onnx name for --format onnx)")
    parser.add_argument("--format", default="torchscript", help=f"{' or '.join(FORMATS)} (default: torchscript)")
    parser.add_argument(
        "--k", type=float, default=None, help="the calibrated K whose λ_K makes the sets (default: predict_k)"
    )
    parser.add_argument(
        "--head",
        default=None,
        help="the head that makes the sets: multilabel, softmax or validation (the better one on validation "
        "at that K); default: the checkpoint's predict_head",
    )
    parser.add_argument("--input-shape", default="3,224,224", help="C,H,W of the images the predictor will get")
    parser.add_argument(
        "--model-class", default="avgk_lightning.TwoHeadModule", help="the module class of the checkpoint"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    try:
        input_shape = [int(size) for size in args.input_shape.split(",")]
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--input-shape must be C,H,W (three positive integers), got {args.input_shape!r}")
    output = Path(args.output)
    try:
        check_output(output, args.format, args.overwrite)
        read_checkpoint(args.checkpoint, argument="checkpoint")
        overrides = {} if args.head is None else {"predict_head": args.head}
        module = _module_class(args.model_class).load_from_checkpoint(
            args.checkpoint, map_location="cpu", weights_only=False, **overrides
        )
        path = export_set_predictor(module, output, args.k, input_shape, args.format)
    except InvalidInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    k = module.predict_k if args.k is None else args.k
    print(f"Exported the set predictor (K={k:g}, sets from the {module.prediction_head(k)} head) to {path}")
    return path


def console_main() -> None:
    """The ``avgk-export`` console script: ``python -m avgk_lightning.export``'s arguments."""
    main()


if __name__ == "__main__":
    main()
