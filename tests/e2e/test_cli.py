"""The CLI end to end on the embedded data: fit, then test from the checkpoint, as a user runs them."""

import csv
import json
import sys

import numpy as np
import pytest
import torch
import wandb

from avgk_lightning.checkpoint import read_checkpoint
from tests.helpers import (
    TinyCNNModule,
    checkpoint_of,
    cli_args,
    cli_in_process,
    reference_set_metrics,
    reference_threshold,
    run_process_group,
    set_head_scores,
    train_py,
)

SMALL = {"train_size": 512, "val_size": 256, "test_size": 257, "batch_size": 64}  # the embedded data, one epoch
KS = ["1", "2", "3", "5", "10"]


def _run(subcommand, root, *extra, config="synthetic_two_head.yaml"):
    """`train.py SUBCOMMAND --config configs/CONFIG` on the small embedded data, writing under `root`."""
    return cli_in_process([subcommand, *cli_args(config, **SMALL), f"--trainer.default_root_dir={root}", *extra])


def _assert_val_metrics_are_the_set_heads(cli, k=2.0):
    """After a one-epoch `fit`: λ_K is the full-sort rule on the set head's validation scores, and the logged
    val/avgk_acc@K and val/set_size@K are numpy's count at that λ_K (the final weights are the validated ones)."""
    scores, target = set_head_scores(cli.model, cli.datamodule, "val")
    threshold = reference_threshold(scores, k)
    assert cli.model.calibrated_threshold(k) == pytest.approx(threshold, rel=1e-6)
    expected = reference_set_metrics(scores, target, threshold)
    for metric in ("avgk_acc", "set_size"):
        assert cli.trainer.callback_metrics[f"val/{metric}@{k:g}"].item() == pytest.approx(expected[metric], abs=1e-6)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cli = _run("fit", root)
    return root, cli


def test_fit_writes_config_and_checkpoints_in_a_new_run_dir(fitted):
    root, cli = fitted
    run_dir = root / "version_0"
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert cli.trainer.checkpoint_callback.monitor == "val/avgk_acc@2"  # the config's k
    for k in KS:
        assert f"val/avgk_acc@{k}" in cli.trainer.callback_metrics
        assert f"val/softmax/avgk_acc_macro@{k}" in cli.trainer.callback_metrics
        assert f"val/oracle/topk_acc@{k}" in cli.trainer.callback_metrics
    assert "train/pseudo_label_set_size" in cli.trainer.callback_metrics


def test_test_applies_the_checkpointed_thresholds_to_both_heads(fitted):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    saved = torch.load(checkpoint_path, weights_only=True)["average_k"]["thresholds"]
    cli = _run("test", root, f"--ckpt_path={checkpoint_path}")
    metrics = cli.trainer.callback_metrics
    assert (root / "version_1" / "config.yaml").is_file()  # a new run dir, nothing overwritten
    for k in KS:
        assert metrics[f"test/threshold@{k}"].item() == pytest.approx(saved["multilabel"][float(k)])
        assert metrics[f"test/softmax/threshold@{k}"].item() == pytest.approx(saved["softmax"][float(k)])
        assert metrics[f"test/oracle/threshold@{k}"].item() == pytest.approx(saved["oracle"][float(k)])
        for prefix in ("test/", "test/softmax/"):
            assert 0.0 <= metrics[f"{prefix}avgk_acc@{k}"].item() <= 1.0
    # the test split is not the validation split: its sets average about K, not exactly K
    assert metrics["test/set_size@3"].item() == pytest.approx(3, rel=0.3)
    coverage = torch.load(checkpoint_path, weights_only=True)["average_k"]["coverage_thresholds"]
    assert metrics["test/coverage_threshold@0.9"].item() == pytest.approx(coverage["multilabel"][0.9])
    assert 0.8 < metrics["test/coverage@0.9"].item() <= 1.0
    for name in ("set_size_histogram", "accuracy_against_k", "per_class_accuracy_against_frequency"):
        plot = root / "version_1" / "plots" / f"{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000, name


def test_train_py_prints_the_results_table(fitted):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    code, output = train_py(
        "test",
        *cli_args(**SMALL),
        f"--trainer.default_root_dir={root}",
        f"--ckpt_path={checkpoint_path}",
        "--verbose=false",
    )
    assert code == 0, output[-3000:]
    assert "| K | avg-K acc, multi-label head | avg-K acc, softmax head | avg-K acc, Bayes oracle |" in output
    assert sum(line.startswith("| ") and line.split("|")[1].strip() in KS for line in output.splitlines()) == 5
    assert "| sets | K | few | medium | many | cov. size 1 |" in output  # the diagnostics table
    assert "| top-K, softmax head | 2 |" in output and "| sets | target coverage | test coverage |" in output
    # The last line names the head that predicts (the default predict_head: validation), from the checkpoint's
    # validation accuracies at the model's K.
    saved = torch.load(checkpoint_path, weights_only=True)
    k, accuracy = float(saved["hyper_parameters"]["k"]), saved["average_k"]["validation_accuracy"]
    better = better_on_validation(checkpoint_path, k)
    title = {"multilabel": "multi-label head", "softmax": "softmax head"}[better]
    other = "softmax" if better == "multilabel" else "multilabel"
    assert (
        f"predict and the exports: sets of the {title} at K={k:g}, the better on validation (avg-K acc "
        f"{accuracy[better][k]:.4f}; {'softmax head' if other == 'softmax' else 'multi-label head'} "
        f"{accuracy[other][k]:.4f})"
    ) in output


def test_predict_writes_the_sets_of_predict_k_and_never_overwrites(fitted, tmp_path, capsys):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    head = better_on_validation(checkpoint_path, 3.0)  # the default predict_head: validation
    saved = torch.load(checkpoint_path, weights_only=True)["average_k"]["thresholds"][head]
    output = tmp_path / "sets.jsonl"
    cli = _run(
        "predict",
        root,
        f"--ckpt_path={checkpoint_path}",
        "--model.init_args.predict_k=3",
        f"--predictions.output={output}",
    )
    predictions = cli.trainer.predict_loop.predictions
    scores = torch.cat([batch["scores"] for batch in predictions])
    sets = torch.cat([batch["sets"] for batch in predictions])
    assert scores.shape == (257, 40) and torch.equal(sets, scores >= saved[3.0])
    assert sets.sum(dim=1).float().mean().item() == pytest.approx(3, rel=0.3)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(257)) and lines[5]["path"] == "test[5]"
    model, images = cli.model, cli.datamodule.test_dataset.tensors[0][:257]
    expected = model.predict_sets(images, k=3)
    names = model.predict_set_names(images, k=3)
    for line, indices, set_names, row in zip(lines, expected, names, scores):
        assert line["class_indices"] == indices and line["set"] == set_names and line["set_size"] == len(indices)
        assert line["scores"] == sorted(line["scores"], reverse=True)
        assert line["scores"] == pytest.approx([row[j].item() for j in indices], abs=1e-6)
    with pytest.raises(SystemExit):  # an existing file is kept
        _run("predict", root, f"--ckpt_path={checkpoint_path}", f"--predictions.output={output}")
    assert f"Predictions file {output} exists" in capsys.readouterr().err
    assert len(output.read_text().splitlines()) == 257
    csv_output = tmp_path / "sets.csv"
    _run("predict", root, f"--ckpt_path={checkpoint_path}", f"--predictions.output={csv_output}")
    rows = list(csv.DictReader(csv_output.open()))
    assert len(rows) == 257 and json.loads(rows[0]["set"]) == model.predict_set_names(images[:1], k=2)[0]


def test_predict_k_that_was_not_calibrated_lists_those_that_were(fitted, capsys):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    with pytest.raises(SystemExit):
        _run("predict", root, f"--ckpt_path={checkpoint_path}", "--model.init_args.predict_k=4")
    assert "K=4 (argument `predict_k`) was not calibrated: the checkpoint has λ_K for K = 1, 2, 3, 5, 10" in (
        capsys.readouterr().err
    )


def test_two_cli_runs_in_one_process_get_two_run_dirs(tmp_path):
    for _ in range(2):
        _run("validate", tmp_path, "--model=tests.helpers.TinyCNNModule")
    assert (tmp_path / "version_0" / "config.yaml").is_file() and (tmp_path / "version_1" / "config.yaml").is_file()


def test_test_without_calibrated_thresholds_says_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run("test", tmp_path)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: No calibrated average-K thresholds for the multilabel, softmax head" in error
    assert "--ckpt_path PATH" in error and "Traceback" not in error


def test_a_subclass_with_its_own_backbone_trains_by_class_path(tmp_path):
    cli = _run(
        "fit", tmp_path, "--model=tests.helpers.TinyCNNModule", "--model.init_args.width=8", "--model.init_args.k=2"
    )
    assert isinstance(cli.model, TinyCNNModule) and cli.model.network.softmax_head.in_features == 8
    assert (tmp_path / "version_0" / "checkpoints" / "best.ckpt").is_file()
    assert "val/avgk_acc@2" in cli.trainer.callback_metrics
    _assert_val_metrics_are_the_set_heads(cli)  # the subclass's backbone is the one trained and evaluated


def test_softmax_config_reports_the_softmax_head_as_the_set_head(tmp_path):
    cli = _run("fit", tmp_path, config="synthetic_softmax.yaml")
    metrics = cli.trainer.callback_metrics
    assert cli.model.method == "softmax"
    assert "val/avgk_acc@2" in metrics and "val/oracle/avgk_acc@2" in metrics
    assert not any(name.startswith("val/softmax/") for name in metrics)
    assert "train/pseudo_label_set_size" not in metrics
    _assert_val_metrics_are_the_set_heads(cli)  # val/avgk_acc@2 is the softmax head's


def test_ckpt_path_last_without_any_run_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run("fit", tmp_path, "--ckpt_path=last")
    assert exit_info.value.code == 2
    assert f"error: --ckpt_path last: no {tmp_path}/version_N/checkpoints/last.ckpt to resume from" in (
        capsys.readouterr().err
    )


def test_wandb_asked_online_without_a_key_falls_back_to_offline(tmp_path, run_root, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no stored key
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    with pytest.warns(UserWarning, match="W&B cannot log online: no W&B API key.*Logging offline instead"):
        cli = _run("fit", run_root, "--trainer.logger.init_args.offline=false", "--model=tests.helpers.TinyCNNModule")
    assert cli.trainer.logger._offline is True
    assert list((run_root / "version_0" / "wandb").glob("offline-run-*"))


def test_each_run_of_one_process_logs_its_own_wandb_run(run_root, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.finish()  # a run an earlier test left open would be reused
    for _ in range(2):  # a notebook running two fits, one after the other
        _run("fit", run_root, "--model=tests.helpers.TinyCNNModule")
        assert wandb.run is None  # the CLI finished its run
    assert [len(list((run_root / f"version_{v}" / "wandb").glob("offline-run-*"))) for v in (0, 1)] == [1, 1]


def test_a_checkpoint_of_another_method_is_refused_before_training(fitted, capsys):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    with pytest.raises(SystemExit) as exit_info:
        _run("fit", root, "--model.init_args.method=softmax", f"--ckpt_path={checkpoint_path}")
    assert exit_info.value.code == 2
    assert "was trained with method='two_head', but method='softmax' was asked" in capsys.readouterr().err


def test_arguments_overridden_by_the_checkpoint_are_named(fitted):
    root, _ = fitted
    checkpoint_path = checkpoint_of(root)
    with pytest.warns(UserWarning, match="come from the checkpoint's hyperparameters: mu=1.0 \\(not 0.5\\)$"):
        cli = _run("test", root, "--model.init_args.mu=0.5", f"--ckpt_path={checkpoint_path}", "--verbose=false")
    assert cli.model.optimizer_factory is not None  # the config's optimizer, not reset by the checkpoint


def test_exported_set_predictor_gives_the_sets_of_the_module(fitted, tmp_path):
    from avgk_lightning.export import load_set_predictor, main

    root, cli = fitted
    checkpoint_path = checkpoint_of(root)
    output = tmp_path / "predictor.pt"
    main([str(checkpoint_path), f"--output={output}", "--k=3", "--input-shape=3,16,16"])
    predictor, metadata = load_set_predictor(output)
    model = TwoHeadModuleFromCheckpoint(checkpoint_path)
    images = cli.datamodule.test_dataset.tensors[0][:64]
    scores, sets = predictor(images)
    head = better_on_validation(checkpoint_path, 3.0)  # the default predict_head: validation
    assert (
        metadata["k"] == 3.0 and metadata["set_head"] == head and metadata["threshold"] == model.calibrated_threshold(3)
    )
    assert metadata["class_names"] == model.class_names
    assert [row.nonzero().flatten().tolist() for row in sets] == [sorted(s) for s in model.predict_sets(images, k=3)]
    with torch.no_grad():
        model.eval()
        softmax_logits, multilabel_logits = model(images)
        torch.testing.assert_close(
            scores, (softmax_logits.softmax(1) if head == "softmax" else multilabel_logits.sigmoid())
        )


def _validation_scores(model, datamodule):
    """Each head's validation scores (softmax probabilities, sigmoid scores) and the labels, in eval mode."""
    scores, targets = {"softmax": [], "multilabel": []}, []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            images, target = datamodule.on_after_batch_transfer(batch, 0)[:2]
            for head, values in model.network.scores(images).items():
                scores[head].append(values)
            targets.append(target)
    return {head: torch.cat(values).numpy() for head, values in scores.items()}, torch.cat(targets).numpy()


def test_predict_head_validation_makes_the_sets_of_the_head_better_on_validation(fitted, tmp_path, capsys):
    from avgk_lightning import TwoHeadModule
    from avgk_lightning.export import load_set_predictor, main

    root, cli = fitted
    path = checkpoint_of(root)
    model = TwoHeadModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, predict_head="validation")
    model.eval()
    scores, target = _validation_scores(model, cli.datamodule)
    images = cli.datamodule.test_dataset.tensors[0][:64]
    for k in map(float, KS):
        # each head's validation accuracy: numpy's count at the full-sort λ_K of that head's validation scores
        accuracy = {
            head: reference_set_metrics(values, target, reference_threshold(values, k))["avgk_acc"]
            for head, values in scores.items()
        }
        for head, value in accuracy.items():
            assert model.calibration.accuracy[head][k] == pytest.approx(value, abs=1e-6)
        better = "softmax" if accuracy["softmax"] > accuracy["multilabel"] else "multilabel"
        assert model.prediction_head(k) == better
        with torch.no_grad():
            test_scores = model.network.scores(images, [better])[better].numpy()
        threshold = np.float32(model.calibration.average_k[better][k])
        expected = [np.flatnonzero(row >= threshold).tolist() for row in test_scores]
        assert [sorted(s) for s in model.predict_sets(images, k=k)] == expected
    # whichever head validation prefers, the sets follow it: swap the recorded accuracies at K = 3
    model.calibration.accuracy["softmax"][3.0], model.calibration.accuracy["multilabel"][3.0] = 1.0, 0.0
    with torch.no_grad():
        softmax_scores = model.network.scores(images, ["softmax"])["softmax"].numpy()
    threshold = np.float32(model.calibration.average_k["softmax"][3.0])
    assert [sorted(s) for s in model.predict_sets(images, k=3)] == [
        np.flatnonzero(row >= threshold).tolist() for row in softmax_scores
    ]

    output = tmp_path / "predictor.pt"
    main([str(path), f"--output={output}", "--k=1", "--head=validation", "--input-shape=3,16,16"])
    predictor, metadata = load_set_predictor(output)
    assert f"sets from the {model.prediction_head(1.0)} head" in capsys.readouterr().out
    assert metadata["set_head"] == model.prediction_head(1.0)
    _, sets = predictor(images)
    assert [row.nonzero().flatten().tolist() for row in sets] == [sorted(s) for s in model.predict_sets(images, k=1)]
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), f"--output={tmp_path / 'other.pt'}", "--head=best"])
    assert "Expected argument `predict_head` to be 'validation' or 'multilabel' or 'softmax', but got 'best'" in (
        _single_error_line(exit_info, capsys)
    )


def test_onnx_export_runs_in_onnxruntime_with_the_scores_and_sets_of_the_module(fitted, tmp_path):
    import onnx

    from avgk_lightning.export import main
    from avgk_lightning.onnx_export import load_onnx_predictor

    root, cli = fitted
    checkpoint_path = checkpoint_of(root)
    output = main(
        [str(checkpoint_path), "--format=onnx", f"--output={tmp_path / 'p.onnx'}", "--k=3", "--input-shape=3,16,16"]
    )
    session, metadata = load_onnx_predictor(output)
    assert [(node.name, node.shape[0]) for node in session.get_inputs()] == [("images", "batch")]
    images = cli.datamodule.test_dataset.tensors[0][:37]  # traced on a batch of 2: the batch axis is dynamic
    scores, sets = session.run(["scores", "sets"], {"images": images.numpy()})
    model = TwoHeadModuleFromCheckpoint(checkpoint_path).eval()
    head = better_on_validation(checkpoint_path, 3.0)  # the default predict_head: validation
    with torch.no_grad():
        expected = model.network.scores(images, [head])[head].numpy()
    assert scores.dtype == np.float32 and sets.dtype == np.bool_ and scores.shape == (37, model.num_classes)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)  # float32 kernels of two runtimes
    assert [row.nonzero()[0].tolist() for row in sets] == [sorted(s) for s in model.predict_sets(images, k=3)]
    threshold = read_checkpoint(checkpoint_path)["average_k"]["thresholds"][head][3.0]
    assert metadata == {
        "k": 3.0,
        "threshold": threshold,
        "set_head": head,
        "method": "two_head",
        "class_names": model.class_names,
        "input_shape": [3, 16, 16],
    }
    assert {prop.key: prop.value for prop in onnx.load(str(output)).metadata_props} == {
        "k": "3.0",
        "threshold": json.dumps(threshold),
        "set_head": head,
        "method": "two_head",
        "class_names": json.dumps(model.class_names),
        "input_shape": "[3, 16, 16]",
    }


def _single_error_line(exit_info, capsys) -> str:
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1 and error.startswith("error: ")
    return error.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{tmp}/nowhere.ckpt", "--output={tmp}/p.pt"],
            "Checkpoint not found: {tmp}/nowhere.ckpt (argument `checkpoint`)",
        ),
        (
            ["{ckpt}", "--format=tflite", "--output={tmp}/p.tflite"],
            "Expected argument `--format` to be 'torchscript' or 'onnx', but got 'tflite'",
        ),
        (
            ["{ckpt}", "--format=onnx", "--output={tmp}/p.pt"],
            "{tmp}/p.pt (argument --output) is not a .onnx name, which --format onnx needs: pass e.g. {tmp}/p.onnx.",
        ),
        (
            ["{ckpt}", "--output={tmp}/p.onnx"],
            "{tmp}/p.onnx (argument --output) is a .onnx name, but --format is torchscript: pass --format onnx",
        ),
        (
            ["{ckpt}", "--format=onnx", "--output={tmp}/p.onnx", "--k=4"],
            "K=4 (argument `--k`) was not calibrated: the checkpoint has λ_K for K = 1, 2, 3, 5, 10.",
        ),
        (["{ckpt}", "--output={tmp}/p.pt", "--k=4"], "K=4 (argument `--k`) was not calibrated"),
        (
            ["{ckpt}", "--format=onnx", "--output={tmp}/exists.onnx"],
            "{tmp}/exists.onnx exists (argument --output): pass another file name, or --overwrite.",
        ),
        (["{ckpt}", "--output={tmp}/exists.pt"], "{tmp}/exists.pt exists (argument --output)"),
    ],
    ids=["no-checkpoint", "format", "onnx-suffix", "torchscript-suffix", "k-onnx", "k", "exists-onnx", "exists"],
)
def test_export_bad_input_ends_in_one_error_line(fitted, tmp_path, capsys, args, message):
    from avgk_lightning.export import main

    (tmp_path / "exists.onnx").touch()
    (tmp_path / "exists.pt").touch()
    values = {"ckpt": checkpoint_of(fitted[0]), "tmp": tmp_path}
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(**values) for arg in args] + ["--input-shape=3,16,16"])
    assert message.format(**values) in _single_error_line(exit_info, capsys)
    assert not (tmp_path / "p.onnx").exists() and not (tmp_path / "p.pt").exists()


def test_onnx_export_without_its_packages_names_the_extra(fitted, tmp_path, capsys, monkeypatch):
    from avgk_lightning.export import main
    from avgk_lightning.onnx_export import load_onnx_predictor

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [str(checkpoint_of(fitted[0])), "--format=onnx", f"--output={tmp_path / 'p.onnx'}", "--input-shape=3,16,16"]
        )
    error = _single_error_line(exit_info, capsys)
    assert error.startswith("error: --format onnx needs the onnxscript package")
    assert error.endswith('pip install "avgk-lightning[export]"')
    with pytest.raises(
        ImportError, match=r"load_onnx_predictor needs the onnxruntime package .*avgk-lightning\[export\]"
    ):
        load_onnx_predictor(tmp_path / "p.onnx")


def test_the_export_command_prints_no_usage_nor_traceback(fitted, tmp_path):
    command = [sys.executable, "-m", "avgk_lightning.export", str(checkpoint_of(fitted[0]))]
    status, output = run_process_group([*command, "--format", "tflite", "--output", str(tmp_path / "p.tflite")])
    assert status == 2
    assert output == "error: Expected argument `--format` to be 'torchscript' or 'onnx', but got 'tflite'\n"


def better_on_validation(path, k):
    """The head with the higher validation average-K accuracy at `k` saved in the checkpoint (multi-label on a tie)."""
    accuracy = torch.load(path, weights_only=True)["average_k"]["validation_accuracy"]
    return max(("multilabel", "softmax"), key=lambda head: (accuracy[head][k], head == "multilabel"))


def TwoHeadModuleFromCheckpoint(path):
    from avgk_lightning import TwoHeadModule

    return TwoHeadModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
