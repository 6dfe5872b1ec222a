"""benchmarks/figures.py: the paired differences it draws, from fabricated runs, and the files it writes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from avgk_lightning.study import RunRecord
from benchmarks import figures


def _run(setting, label, seed, k, accuracy, softmax_head=None, val=None):
    results = {f"test/avgk_acc@{k:g}": accuracy}
    if softmax_head is not None:
        results[f"test/softmax/avgk_acc@{k:g}"] = softmax_head
    run = {
        "setting": setting, "label": label, "method": label, "seed": seed, "k": k, "per_k": label != "softmax",
        "eval_ks": [k], "results": {"best": results, "last": results}, "epochs": {"best": 0, "last": 0},
        "train_top1_acc": [0.5],
    }  # fmt: skip
    if val is not None:
        run["epoch_metrics"] = [{f"val/avgk_acc@{k:g}": val[0], f"val/softmax/avgk_acc@{k:g}": val[1]}]
    return RunRecord.from_dict(run)


def _runs():
    """Two noise settings and a long-tail one; two_head minus softmax is 0.01·seed + noise/10 (K = 2)."""
    runs = []
    for setting, noise in (("noise=0.4", 0.4), ("noise=0", 0.0), ("noise=0.2 imbalance=20", 0.2)):
        for seed in range(3):
            runs.append(_run(setting, "softmax", seed, 2.0, 0.8))
            gain = 0.01 * seed + noise / 10
            # the softmax head is better on validation for seed 0 only
            val = (0.7, 0.9) if seed == 0 else (0.9, 0.7)
            runs.append(_run(setting, "two_head", seed, 2.0, 0.8 + gain, softmax_head=0.79, val=val))
    return runs


def test_noise_curves_are_the_paired_differences_by_increasing_noise():
    runs = [figures.with_head_chosen_on_validation(run) for run in _runs()]
    settings = ["noise=0.4", "noise=0", "noise=0.2 imbalance=20"]
    curves = figures.noise_curves(runs, settings, "two_head", "set", "best")
    assert list(curves) == [2.0]
    assert [noise for noise, _ in curves[2.0]] == [0.0, 0.4]  # the long-tail setting is not a noise rate alone
    assert curves[2.0][1][1] == pytest.approx([0.04, 0.05, 0.06])
    chosen = figures.noise_curves(runs, settings, "two_head", "chosen", "best")
    assert chosen[2.0][0][1] == pytest.approx([-0.01, 0.01, 0.02])  # seed 0 keeps its softmax head (0.79)
    table = figures.noise_markdown({"best": curves, "last": chosen}, runs).splitlines()
    assert table[0] == "| noise | softmax K=2: best / last | softmax train top-1, last epoch | K=2, best | K=2, last |"
    # p = 0: 0.00, 0.01, 0.02 (mean 0.01, half-width 4.303 * 0.01 / sqrt(3) = 0.0248: a tie); the chosen head
    # -0.01, 0.01, 0.02; p = 0.4: 0.04, 0.05, 0.06 (a win), the chosen head 0.79 - 0.8 for seed 0
    assert table[2] == "| 0 | 0.8000 / 0.8000 | 0.500 | +0.0100 (2/1/0) tie | +0.0067 (2/0/1) tie |"
    assert table[3] == "| 0.4 | 0.8000 / 0.8000 | 0.500 | **+0.0500 (3/0/0) win** | +0.0333 (2/0/1) tie |"


def test_grid_cells_hold_each_setting_and_column_and_the_files_are_never_overwritten(tmp_path):
    journal = tmp_path / "grid.runs.jsonl"
    journal.write_text("".join(json.dumps({**run.to_dict(), "key": str(i)}) + "\n" for i, run in enumerate(_runs())))
    runs, settings = figures.load_runs(journal)
    assert settings == ["noise=0.4", "noise=0", "noise=0.2 imbalance=20"]
    titles, cells = figures.grid_cells(runs, settings, ["best", "last"])
    assert titles == [
        "two_head\nK=2, best",
        "two_head\nK=2, last",
        "two_head, head chosen on val.\nK=2, best",
        "two_head, head chosen on val.\nK=2, last",
    ]
    assert cells[2][1] == pytest.approx([0.02, 0.03, 0.04]) and cells[0][2] == pytest.approx([-0.01, 0.05, 0.06])
    table = figures.grid_markdown(settings, titles, cells).splitlines()
    assert table[0] == (
        "| setting | two_head, K=2, best | two_head, K=2, last | two_head, head chosen on val., K=2, best "
        "| two_head, head chosen on val., K=2, last |"
    )
    # 0.02, 0.03, 0.04: mean 0.03, half-width 4.303 * 0.01 / sqrt(3) = 0.0248: a win; with the chosen head a tie
    assert table[4] == (
        "| noise=0.2 imbalance=20 | **+0.0300 (3/0/0) win** | **+0.0300 (3/0/0) win** | +0.0200 (2/0/1) tie "
        "| +0.0200 (2/0/1) tie |"
    )
    tally = figures.grid_tally(titles, cells).splitlines()
    # two_head, best: +0.05 (win), +0.01 (0.00, 0.01, 0.02: tie), +0.03 (win): all three cells ahead
    assert tally[2] == "| two_head, K=2, best | 3 | 3 | 0 | 0 | 2 | 0 |"
    # the chosen head, best (seed 0 on its softmax head, 0.79): +0.0333, +0.0067, +0.02: ahead, none decided
    assert tally[4] == "| two_head, head chosen on val., K=2, best | 3 | 3 | 0 | 0 | 0 | 0 |"
    # a cell within the band, one behind and lost, one not measured
    assert figures.grid_tally(["x"], [[[0.001, 0.002]], [[-0.010, -0.011, -0.012]], [None]]).splitlines()[2] == (
        "| x | 2 | 0 | 1 | 1 | 0 | 1 |"
    )
    with_softmax = figures.grid_markdown(settings, titles, cells, runs).splitlines()
    assert with_softmax[2].startswith("| noise=0.4 | 0.8000 / 0.8000 | 0.500 | **+0.0500 (3/0/0) win** |")
    out = tmp_path / "figures" / "grid.png"
    assert figures.main(["grid", str(journal), str(out)]) == out
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit):
        figures.main(["grid", str(journal), str(out)])  # exists: refused
    noise = tmp_path / "noise.png"
    figures.main(["noise", str(journal), str(noise), "--head", "chosen"])
    assert noise.read_bytes().startswith(b"\x89PNG")


def test_memorisation_points_pair_each_seed_with_the_baselines_training_fit():
    runs = [
        dataclasses.replace(run, train_top1_acc=[0.5, 0.6 + 0.1 * run.seed]) if run.label == "softmax" else run
        for run in _runs()
    ]
    points = figures.memorisation_points(runs, ["noise=0.4", "noise=0"], "two_head", "last")
    assert list(points) == ["noise=0.4", "noise=0"]
    flat = {setting: [value for point in values for value in point] for setting, values in points.items()}
    assert flat["noise=0.4"] == pytest.approx([0.6, 0.04, 0.7, 0.05, 0.8, 0.06])
    assert flat["noise=0"] == pytest.approx([0.6, 0.0, 0.7, 0.01, 0.8, 0.02])


def test_the_row_and_head_chosen_on_validation_is_the_best_on_validation_per_seed():
    runs = []
    for seed, (sum_val, mean_val) in enumerate(
        [((0.9, 0.7), (0.8, 0.95)), ((0.9, 0.7), (0.9, 0.8)), ((0.6, 0.7), (0.5, 0.6))]
    ):
        runs.append(_run("x", "softmax", seed, 2.0, 0.80))
        runs.append(_run("x", "two_head", seed, 2.0, 0.81 + seed / 100, softmax_head=0.70, val=sum_val))
        runs.append(_run("x", "bce_mean", seed, 2.0, 0.75, softmax_head=0.83, val=mean_val))
    runs.append(_run("x", "two_head", 3, 2.0, 0.9, softmax_head=0.9, val=(0.9, 0.9)))  # seed 3 lacks bce_mean
    # seed 0: bce_mean's softmax head (val 0.95) -> 0.83; seed 1: a tie at 0.9, the first row's set head -> 0.82;
    # seed 2: two_head's softmax head (val 0.7) -> 0.70
    assert figures.rows_chosen_on_validation(runs, "x", ["two_head", "bce_mean"], 2.0, "best") == pytest.approx(
        [0.03, 0.02, -0.10]
    )
    assert figures.rows_chosen_on_validation(runs, "y", ["two_head", "bce_mean"], 2.0, "best") is None
    titles, cells = figures.grid_cells(runs, ["x"], ["best"])
    assert titles[-1] == "row and head chosen on val.\nK=2, best" and cells[0][-1] == pytest.approx([0.03, 0.02, -0.10])
