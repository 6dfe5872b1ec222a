"""benchmarks/compare.py: its tables from fabricated runs, and end to end on a tiny setting."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys

import pytest

from tests.helpers import ROOT, run_process_group

TINY = [
    "--set=data.init_args.train_size=300",
    "--set=data.init_args.val_size=100",
    "--set=data.init_args.test_size=101",
]


@functools.cache
def _compare():
    """benchmarks/compare.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_compare", ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _record(label, method, seed, k, per_k, values, epochs=(3, 9)):
    """A fabricated run: `values` maps (prefix, metric, K) to its value at both checkpoints."""
    results = {f"{prefix}{metric}@{format(key, 'g')}": value for (prefix, metric, key), value in values.items()}
    return {
        "setting": "noise=0.4",
        "label": label,
        "method": method,
        "seed": seed,
        "k": k,
        "per_k": per_k,
        "eval_ks": [1.5, 2.0],
        "results": {"best": results, "last": results},
        "epochs": {"best": epochs[0], "last": epochs[1]},
        "train_top1_acc": [0.5 + 0.05 * epoch for epoch in range(10)],
    }


def _fabricated():
    records = []
    for seed, (base, gain) in enumerate([(0.80, 0.02), (0.82, -0.01), (0.81, 0.0002)]):
        softmax = {("test/", "avgk_acc", k): base + 0.01 * k for k in (1.5, 2.0)}
        records.append(_record("softmax", "softmax", seed, 2.0, False, softmax))
        for k in (1.5, 2.0):
            two_head = {("test/", "avgk_acc", k): base + 0.01 * k + gain, ("test/softmax/", "avgk_acc", k): base}
            records.append(_record("two_head", "two_head", seed, k, True, two_head))
    return records


def test_paired_differences_use_the_model_trained_for_each_k_and_the_same_seed():
    compare = _compare()
    records = _fabricated()
    for k in (1.5, 2.0):
        differences = compare.paired_differences(
            records, "noise=0.4", "two_head", "test/", "softmax", "avgk_acc", k, "best"
        )
        assert differences == pytest.approx([0.02, -0.01, 0.0002])
        own_softmax = compare.paired_differences(
            records, "noise=0.4", "two_head", "test/softmax/", "softmax", "avgk_acc", k, "last"
        )
        assert own_softmax == pytest.approx([-0.01 * k] * 3)


def test_tables_say_which_rows_are_one_model_per_k_and_count_signs():
    compare = _compare()
    text = compare.report(_fabricated(), ["noise=0.4"], ["two_head", "softmax"], [1.5, 2.0], ["best", "last"])
    # two_head at K=1.5: 0.835, 0.825, 0.8252 over the seeds: mean 0.8284, sample std 0.0057
    assert "| two_head (one model per K) | 0.8284 ± 0.0057 | 0.8334 ± 0.0057 |" in text
    assert "| two_head, its softmax head (one model per K) | 0.8100 ± 0.0100 | 0.8100 ± 0.0100 |" in text
    assert "| softmax (one model, at every K) | 0.8250 ± 0.0100 | 0.8300 ± 0.0100 |" in text
    assert "| two_head - softmax | 1.5 | +0.0200 -0.0100 +0.0002 | +0.0034 | 1 / 1 / 1 |" in text
    assert "| two_head (k=1.5) | 3, 3, 3 | 0.6500 ± 0.0000 | 0.9500 ± 0.0000 |" in text  # train acc at epoch 3
    assert "| two_head (k=1.5) | 9, 9, 9 | 0.9500 ± 0.0000 | 0.9500 ± 0.0000 |" in text  # the last checkpoint
    summary = text.split("**Summary: paired differences**", 1)[1]
    assert (
        "| noise=0.4 | two_head - softmax | 2 | +0.0034 (1 / 1 / 1) | - | - | +0.0034 (1 / 1 / 1) | - | - |" in summary
    )


def test_only_k_dependent_methods_train_one_model_per_k():
    compare = _compare()
    assert [compare.depends_on_k(m) for m in ("two_head", "epr", "role", "softmax", "an", "em")] == [True] * 3 + [
        False
    ] * 3


def _table(report: str, title: str) -> dict[str, list[str]]:
    """Rows of the first Markdown table after the bold `title`: first cell -> other cells."""
    block = report.split(f"**{title}**", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")][2:]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


@pytest.mark.slow
def test_compare_trains_one_model_per_k_and_tests_both_checkpoints_end_to_end(tmp_path):
    out = tmp_path / "results" / "table.md"
    command = [
        sys.executable,
        "benchmarks/compare.py",
        "--methods=two_head,softmax",
        "--per-k=1.5,2",
        "--seeds=1",
        "--max-epochs=2",
        "--checkpoints=best,last",
        "--seed-args=data.init_args.seed",
    ]
    code, output = run_process_group([*command, *TINY, f"--out={out}"], timeout=400)
    assert code == 0, output[-4000:]
    report = out.read_text()
    assert report.startswith("Command: `python benchmarks/compare.py --methods=two_head,softmax --per-k=1.5,2")
    raw = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert sorted((run["label"], run["k"]) for run in raw) == [("softmax", 2.0), ("two_head", 1.5), ("two_head", 2.0)]
    for run in raw:
        assert run["epochs"]["last"] == 1 and 0 <= run["epochs"]["best"] <= 1 and len(run["train_top1_acc"]) == 2
    accuracy = _table(report, "Test average-K accuracy")
    assert set(accuracy) == {
        "two_head (one model per K)",
        "two_head, its softmax head (one model per K)",
        "softmax (one model, at every K)",
        "Bayes oracle",
    }
    two_head = {run["k"]: run for run in raw if run["label"] == "two_head"}
    softmax = next(run for run in raw if run["label"] == "softmax")
    for column, k in enumerate((1.5, 2.0)):
        name = f"test/avgk_acc@{k:g}"
        assert float(accuracy["two_head (one model per K)"][column]) == pytest.approx(
            two_head[k]["results"]["best"][name], abs=6e-5
        )
        difference = two_head[k]["results"]["best"][name] - softmax["results"]["best"][name]
        line = re.search(rf"^\| two_head - softmax \| {k:g} \| (\S+) \|", report, flags=re.MULTILINE)
        assert float(line.group(1)) == pytest.approx(difference, abs=1.5e-4)


def test_compare_refuses_to_overwrite_and_unknown_methods(tmp_path):
    existing = tmp_path / "table.md"
    existing.write_text("mine")
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", f"--out={existing}"], timeout=120)
    assert code == 2 and "exists (or its .json): pass a new file name" in output and existing.read_text() == "mine"
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", "--methods=two_head,nope"], timeout=120)
    assert code == 2 and "unknown method(s) nope (argument --methods)" in output
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", "--variant=x=nope a=1"], timeout=120)
    assert code == 2 and "--variant must look like" in output
