"""benchmarks/compare.py: its paired differences and tables from fabricated runs."""

from __future__ import annotations

import functools
import importlib.util
import sys

import pytest

from tests.helpers import ROOT


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
        "| noise=0.4 | two_head - softmax | 2 | +0.0034 (1 / 1 / 1) tie | - | - | +0.0034 (1 / 1 / 1) tie | - | - |"
        in summary
    )


def test_only_k_dependent_methods_train_one_model_per_k():
    compare = _compare()
    assert [compare.depends_on_k(m) for m in ("two_head", "epr", "role", "softmax", "an", "em")] == [True] * 3 + [
        False
    ] * 3


def test_the_head_chosen_on_validation_is_the_better_one_at_each_checkpoint_epoch():
    compare = _compare()
    record = _record(
        "two_head", "two_head", 0, 2.0, True,
        {("test/", "avgk_acc", 2.0): 0.90, ("test/softmax/", "avgk_acc", 2.0): 0.93,
         ("test/", "set_size", 2.0): 2.1, ("test/softmax/", "set_size", 2.0): 1.9},
    )  # fmt: skip
    record["results"]["last"] = {**record["results"]["last"], "test/avgk_acc@2": 0.95}
    record["epoch_metrics"] = [{"val/avgk_acc@2": 0.5, "val/softmax/avgk_acc@2": 0.5} for _ in range(10)]
    record["epoch_metrics"][3] = {"val/avgk_acc@2": 0.80, "val/softmax/avgk_acc@2": 0.81}  # best: softmax head
    record["epoch_metrics"][9] = {"val/avgk_acc@2": 0.82, "val/softmax/avgk_acc@2": 0.82}  # last: a tie
    chosen = compare.with_head_chosen_on_validation(record)["results"]
    assert chosen["best"]["test/chosen/avgk_acc@2"] == 0.93 and chosen["best"]["test/chosen/set_size@2"] == 1.9
    assert chosen["last"]["test/chosen/avgk_acc@2"] == 0.95 and chosen["last"]["test/chosen/set_size@2"] == 2.1
    softmax = _record("softmax", "softmax", 0, 2.0, False, {("test/", "avgk_acc", 2.0): 0.91})
    softmax["epoch_metrics"] = [{"val/avgk_acc@2": 0.8}] * 10
    assert compare.with_head_chosen_on_validation(softmax) == softmax  # one head: nothing to choose
    text = compare.render(
        {"command": "c", "runs": [record, softmax], "rows": [{"label": "two_head"}, {"label": "softmax"}],
         "settings": ["noise=0.4"], "ks": [2.0], "checkpoints": ["best", "last"]}
    )  # fmt: skip
    assert "| two_head, the head better on validation - softmax | 2 | +0.0200 | +0.0200 | 1 / 0 / 0 |" in text
    assert "| two_head, the head better on validation (one model per K) | 0.9300 |" in text


def test_a_cell_is_won_or_lost_only_when_the_paired_t_interval_excludes_zero():
    compare = _compare()
    # mean 0.02, sample std 0.01: half-width 4.303 * 0.01 / sqrt(3) = 0.0248 > 0.02
    assert compare.paired_verdict([0.01, 0.02, 0.03]) == "tie"
    # mean 0.021, sample std 0.001: half-width 0.0025 < 0.021
    assert compare.paired_verdict([0.020, 0.021, 0.022]) == "win"
    assert compare.paired_verdict([-0.020, -0.021, -0.022]) == "loss"
    # five seeds: t = 2.776, std 0.0158, half-width 0.0196 against a mean of 0.02
    assert compare.paired_verdict([0.0, 0.01, 0.02, 0.03, 0.04]) == "win"
    assert compare.paired_verdict([0.05]) == "tie"  # one seed decides nothing


def test_breadth_order_plans_the_same_runs_seed_by_seed_with_the_methods_before_the_variants(tmp_path):
    compare = _compare()
    argv = [
        "--methods", "softmax,two_head", "--seeds", "2",
        "--variant", "mean=two_head model.init_args.mu=0.1",
        "--setting", "a=1", "--setting", "a=2",
    ]  # fmt: skip
    by_cell = compare._jobs(compare._parse_args(argv))
    breadth = compare._jobs(compare._parse_args([*argv, "--order", "breadth"]))
    assert sorted(map(repr, by_cell)) == sorted(map(repr, breadth))
    assert [(job.setting, job.row.label, job.seed) for job in by_cell[:3]] == [
        ("a=1", "softmax", 0), ("a=1", "softmax", 1), ("a=1", "two_head", 0),
    ]  # fmt: skip
    assert [(job.seed, job.setting, job.row.label) for job in breadth] == [
        (0, "a=1", "softmax"), (0, "a=1", "two_head"), (0, "a=2", "softmax"), (0, "a=2", "two_head"),
        (0, "a=1", "mean"), (0, "a=2", "mean"),
        (1, "a=1", "softmax"), (1, "a=1", "two_head"), (1, "a=2", "softmax"), (1, "a=2", "two_head"),
        (1, "a=1", "mean"), (1, "a=2", "mean"),
    ]  # fmt: skip
