"""Two CPU processes (gloo) against one: the same numbers, on splits whose size is not divisible by 2.

The DDP job runs as a script in a subprocess (its own process group), never as in-process DDP inside
pytest; the group is killed whatever happens, so no process is left behind.
"""

import json
from pathlib import Path

import pytest

from tests.helpers import assert_same_metrics, run_script


def _run(out: Path, devices: int) -> dict:
    code, output = run_script("ddp_equivalence", out, devices)
    assert code == 0, output[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp")
    return _run(directory / "one.json", 1), _run(directory / "two.json", 2)


def test_two_processes_really_ran(runs):
    assert [run["world_size"] for run in runs] == [1, 2]


def test_epoch_pseudo_label_threshold_equals_single_process(runs):
    single, distributed = runs
    assert single["epoch_threshold"] is not None
    assert distributed["epoch_threshold"] == pytest.approx(single["epoch_threshold"], rel=1e-6)
    assert distributed["fit"]["train/pseudo_label_set_size"] == pytest.approx(
        single["fit"]["train/pseudo_label_set_size"], rel=1e-6
    )


def test_validation_metrics_equal_single_process(runs):
    single, distributed = runs
    assert "val/avgk_acc@2.5" in single["val"] and "val/softmax/avgk_acc_macro@3" in single["val"]
    assert_same_metrics(single["val"], distributed["val"], rel=1e-6, absolute=1e-7)


def test_test_metrics_equal_single_process(runs):
    single, distributed = runs
    assert "test/oracle/avgk_acc@1" in single["test"]
    assert_same_metrics(single["test"], distributed["test"], rel=1e-6, absolute=1e-7)


def test_metrics_on_uneven_shards_equal_single_process(runs):
    single, distributed = runs
    assert_same_metrics(single["sharded"], distributed["sharded"], rel=1e-6, absolute=1e-7)


def test_a_multi_label_head_per_k_gets_the_single_process_thresholds_and_metrics(runs):
    single, distributed = runs
    thresholds = single["multi_k"]["epoch_threshold"]
    assert len(thresholds) == 2 and thresholds[0] > thresholds[1]  # λ_pl of K = 1.5 above that of K = 3
    assert distributed["multi_k"]["epoch_threshold"] == pytest.approx(thresholds, rel=1e-6)
    fit = {name: value for name, value in single["multi_k"]["fit"].items() if name.startswith("train/pseudo_label")}
    assert sorted(fit) == [
        "train/pseudo_label_set_size@1.5",
        "train/pseudo_label_set_size@3",
        "train/pseudo_label_threshold@1.5",
        "train/pseudo_label_threshold@3",
    ]
    for name, value in fit.items():
        assert distributed["multi_k"]["fit"][name] == pytest.approx(value, rel=1e-6), name
    assert "val/avgk_acc@1.5" in single["multi_k"]["val"] and "val/avgk_acc@1" not in single["multi_k"]["val"]
    assert_same_metrics(single["multi_k"]["val"], distributed["multi_k"]["val"], rel=1e-6, absolute=1e-7)
