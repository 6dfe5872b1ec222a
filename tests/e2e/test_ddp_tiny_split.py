"""DDP with evaluation splits of one image: no hang, and the metrics and predictions of 1 process."""

import json

import pytest

from tests.helpers import run_script


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_split")
    results = {}
    for devices in (1, 2):
        out = root / f"devices_{devices}.json"
        code, output = run_script("ddp_tiny_split", out, devices, timeout=240)  # a hang ends here, killed
        assert code == 0, output[-3000:]
        results[devices] = json.loads(out.read_text())
    return results


@pytest.mark.slow
def test_one_image_splits_on_two_processes_give_the_metrics_of_one(runs):
    one, two = runs[1], runs[2]
    assert two["world_size"] == 2
    evaluated = [name for name in one["fit"] if name.startswith("val/")]
    assert "val/avgk_acc@2" in evaluated and "test/avgk_acc@2" in one["test"]
    assert {name: two["fit"][name] for name in evaluated} == {name: one["fit"][name] for name in evaluated}
    assert two["test"] == one["test"]


@pytest.mark.slow
def test_one_image_split_on_two_processes_predicts_one_set(runs):
    assert len(runs[2]["predictions"]) == 1
    assert runs[2]["predictions"] == runs[1]["predictions"]
