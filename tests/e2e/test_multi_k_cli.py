"""One training for several K through train.py: `--model.init_args.k '[1.5,3]'`, then test, predict and the exports."""

import json

import numpy as np
import pytest
import torch

from avgk_lightning import TwoHeadModule
from tests.helpers import checkpoint_of, cli_args, cli_in_process, reference_threshold, set_head_scores, train_py

SMALL = {"train_size": 512, "val_size": 256, "test_size": 257, "batch_size": 64}
# The sets of each trained K from its own multi-label head (the default, validation, may take the softmax head).
MULTILABEL = "--model.init_args.predict_head=multilabel"


def _run(subcommand, root, *extra):
    return cli_in_process([subcommand, *cli_args(**SMALL), f"--trainer.default_root_dir={root}", MULTILABEL, *extra])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, _run("fit", root, "--model.init_args.k=[1.5,3]")


def _head_scores(model, datamodule, split, index):
    """The validation or test scores of multi-label head `index`, as the evaluation loop reads them."""
    scores, target = set_head_scores(model, datamodule, split)  # (N, 2, L) for two heads
    return scores[:, index], target


def test_fit_trains_a_head_per_k_and_calibrates_each_at_its_k(fitted):
    root, cli = fitted
    assert cli.model.ks == (1.5, 3.0)
    assert cli.trainer.checkpoint_callback.monitor == "val/avgk_acc@1.5"  # the first K picks the best epoch
    for index, k in enumerate((1.5, 3.0)):
        scores, target = _head_scores(cli.model, cli.datamodule, "val", index)
        threshold = reference_threshold(scores, k)
        assert cli.model.calibrated_threshold(k) == pytest.approx(threshold, rel=1e-6)
        accuracy = float(np.mean(scores[np.arange(len(target)), target] >= np.float32(threshold)))
        assert cli.trainer.callback_metrics[f"val/avgk_acc@{k:g}"].item() == pytest.approx(accuracy, abs=1e-6)
    assert "val/avgk_acc@2" not in cli.trainer.callback_metrics  # no head was trained for K = 2
    assert "val/softmax/avgk_acc@2" in cli.trainer.callback_metrics
    saved = torch.load(checkpoint_of(root), map_location="cpu", weights_only=True)
    assert saved["average_k"]["trained_ks"] == [1.5, 3.0]


def test_train_py_test_prints_which_head_made_each_row(fitted):
    root, _ = fitted
    args = [f"--trainer.default_root_dir={root}", f"--ckpt_path={checkpoint_of(root)}", "--verbose=false", MULTILABEL]
    code, output = train_py("test", *cli_args(**SMALL), *args)
    assert code == 0, output[-3000:]
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("| K | multi-label head |"))
    rows = lines[lines.index(header) + 2 :]
    assert next(row for row in rows if row.startswith("| 1.5 |")).startswith("| 1.5 | K=1.5 | 0.")
    assert next(row for row in rows if row.startswith("| 2 |")).startswith("| 2 | - | - |")


def test_predict_k_picks_the_head_of_that_k(fitted, tmp_path):
    root, cli = fitted
    output = tmp_path / "sets.jsonl"
    args = [f"--ckpt_path={checkpoint_of(root)}", "--model.init_args.predict_k=3", f"--predictions.output={output}"]
    _run("predict", root, *args)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    model = TwoHeadModule.load_from_checkpoint(checkpoint_of(root), map_location="cpu", weights_only=False).eval()
    scores, _ = _head_scores(model, cli.datamodule, "test", 1)
    threshold = np.float32(model.calibration.average_k["multilabel"][3.0])
    assert len(records) == SMALL["test_size"] and {record["k"] for record in records} == {3.0}
    assert [sorted(r["class_indices"]) for r in records] == [np.flatnonzero(s >= threshold).tolist() for s in scores]


def test_predict_k_without_a_head_is_one_error_line_naming_the_trained_ones(fitted, capsys):
    root, _ = fitted
    with pytest.raises(SystemExit):
        _run("predict", root, f"--ckpt_path={checkpoint_of(root)}", "--model.init_args.predict_k=2")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: K=2 (argument `predict_k`) was not trained: this model's multi-label heads")
    assert "serve K = 1.5, 3" in error and "predict_head softmax" in error


def test_onnx_export_of_each_k_gives_the_sets_of_the_module(fitted, tmp_path):
    pytest.importorskip("onnxruntime")
    from avgk_lightning.export import main
    from avgk_lightning.onnx_export import load_onnx_predictor

    root, cli = fitted
    model = TwoHeadModule.load_from_checkpoint(checkpoint_of(root), map_location="cpu", weights_only=False).eval()
    images = cli.datamodule.test_dataset.tensors[0][:32]
    for k in (1.5, 3.0):
        output = tmp_path / f"k{k:g}.onnx"
        main([str(checkpoint_of(root)), f"--output={output}", "--format=onnx", f"--k={k:g}", "--input-shape=3,16,16"])
        session, metadata = load_onnx_predictor(output)
        _, sets = session.run(None, {"images": images.numpy()})
        assert metadata["k"] == k and metadata["threshold"] == model.calibrated_threshold(k)
        assert [np.flatnonzero(row).tolist() for row in sets] == [sorted(s) for s in model.predict_sets(images, k)]
