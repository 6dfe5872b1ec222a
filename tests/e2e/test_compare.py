"""avgk-compare end to end on a tiny setting, its resumption after a kill, and its refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_process_group

TINY = [
    "--set=data.init_args.train_size=300",
    "--set=data.init_args.val_size=100",
    "--set=data.init_args.test_size=101",
    "--set=model.init_args.backbone=small_resnet",  # a narrow ResNet-8: the tool, not the network, is tested
]
COMPARE = str(Path(sys.executable).with_name("avgk-compare"))  # the console script


def _table(report: str, title: str) -> dict[str, list[str]]:
    """Rows of the first Markdown table after the bold `title`: first cell -> other cells."""
    block = report.split(f"**{title}**", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")][2:]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


@pytest.mark.slow
def test_compare_trains_one_model_per_k_and_tests_both_checkpoints_end_to_end(tmp_path):
    out = tmp_path / "results" / "table.md"
    command = [
        COMPARE,
        "--methods=two_head,softmax",
        "--per-k=1.5,2",
        "--seeds=1",
        "--max-epochs=2",
        "--checkpoints=best,last",
        "--seed-args=data.init_args.seed",
    ]
    code, output = run_process_group([*command, *TINY, f"--out={out}"], timeout=400)
    assert code == 0, output[-4000:]
    assert "LightningCLI's args parameter" not in output  # the tool's own arguments are not the runs'
    report = out.read_text()
    assert report.startswith("Command: `avgk-compare --methods=two_head,softmax --per-k=1.5,2")
    raw = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert sorted((run["label"], run["k"]) for run in raw) == [("softmax", 2.0), ("two_head", 1.5), ("two_head", 2.0)]
    for run in raw:
        assert run["epochs"]["last"] == 1 and 0 <= run["epochs"]["best"] <= 1 and len(run["train_top1_acc"]) == 2
    accuracy = _table(report, "Test average-K accuracy")
    assert set(accuracy) == {
        "two_head (one model per K)",
        "two_head, its softmax head (one model per K)",
        "two_head, the head better on validation (one model per K)",
        "softmax (one model, at every K)",
        "Bayes oracle",
    }
    for run in raw:  # every epoch's validation accuracy of each head, the last one that of the last checkpoint
        assert len(run["epoch_metrics"]) == 2
        name = f"val/avgk_acc@{run['k']:g}"
        heads = [name, name.replace("val/", "val/softmax/")] if run["label"] == "two_head" else [name]
        assert all(0 <= epoch[head] <= 1 for epoch in run["epoch_metrics"] for head in heads)
    for k in (1.5, 2.0):  # the row of the head better on validation holds that head's test accuracy
        run = next(run for run in raw if run["label"] == "two_head" and run["k"] == k)
        validation = run["epoch_metrics"][run["epochs"]["best"]]
        name = f"avgk_acc@{k:g}"
        better = "test/softmax/" if validation[f"val/softmax/{name}"] > validation[f"val/{name}"] else "test/"
        chosen = accuracy["two_head, the head better on validation (one model per K)"][(1.5, 2.0).index(k)]
        assert float(chosen) == pytest.approx(run["results"]["best"][better + name], abs=6e-5)
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
    code, output = run_process_group([COMPARE, f"--out={existing}"], timeout=120)
    assert code == 2 and "exists (or its .json) without the run journal table.runs.jsonl" in output
    assert existing.read_text() == "mine"
    code, output = run_process_group([COMPARE, "--methods=two_head,nope"], timeout=120)
    assert code == 2 and "avgk-compare: error: unknown method(s) nope (argument --methods)" in output
    # The command the older results files quote runs the same tool.
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", "--variant=x=nope a=1"], timeout=120)
    assert code == 2 and "compare.py: error: --variant must look like" in output


@pytest.mark.slow
def test_compare_killed_mid_study_resumes_without_repeating_finished_runs(tmp_path):
    out = tmp_path / "study.md"
    journal = tmp_path / "study.runs.jsonl"
    command = [
        sys.executable,
        "-m",
        "avgk_lightning.study",
        "--methods=softmax",
        "--seeds=3",
        "--max-epochs=1",
        "--seed-args=data.init_args.seed",
        *TINY,
        f"--out={out}",
    ]
    temporary = tmp_path / "tmp"  # where the study's trainings write (TMPDIR)
    temporary.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "TMPDIR": str(temporary)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:  # kill the study (SIGKILL: no clean-up of any kind) once its first run is in the journal
        deadline = time.monotonic() + 300
        while not (journal.exists() and journal.read_text().count("\n") >= 1) and time.monotonic() < deadline:
            assert process.poll() is None, "the study ended before it could be interrupted"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 1 <= len(finished) < 3
    # A finished run's folder (its checkpoints) is removed once its record is in the journal.
    (root,) = temporary.glob("avgk-compare-*")  # job_I trains the plan's run I: seed I here
    assert [index for index in range(len(finished)) if (root / f"job_{index}").exists()] == []
    assert len(json.loads(out.with_suffix(".json").read_text())["runs"]) == len(finished)  # tables kept up to date
    with open(journal, "a") as handle:
        handle.write('{"key": "a line cut short by the kill')  # what a kill during a write leaves

    code, output = run_process_group(command, timeout=400)
    assert code == 0, output[-4000:]
    assert f"Resuming: {len(finished)} of 3 runs are in the journal, {3 - len(finished)} to go." in output
    assert output.count("| softmax k=2 seed") == 3 - len(finished)  # one progress line per run trained
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [run["seed"] for run in runs] == [0, 1, 2]
    assert runs[: len(finished)] == finished  # the journal's runs, unchanged
    assert "3 of 3 training runs done" in out.read_text()

    code, output = run_process_group([*command, "--seeds=4"], timeout=400)  # a larger plan reuses the same runs
    assert code == 0 and "Resuming: 3 of 4 runs are in the journal, 1 to go." in output, output[-4000:]
    assert output.count("| softmax k=2 seed") == 1


@pytest.mark.slow
def test_compare_stopped_by_sigterm_exits_and_removes_its_temporary_files(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "avgk_lightning.study", "--methods=softmax", "--seeds=1", "--max-epochs=50", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "TMPDIR": str(temporary)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:  # SIGTERM (a plain kill, a scheduler's preemption) once the training has written its first checkpoint
        deadline = time.monotonic() + 300
        while not list(temporary.glob("avgk-compare-*/job_0/**/*.ckpt")) and time.monotonic() < deadline:
            assert process.poll() is None, "the study ended before it could be stopped"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert code == 128 + signal.SIGTERM
    assert list(temporary.iterdir()) == []


@pytest.mark.slow
def test_compare_with_two_jobs_trains_every_run_and_leaves_no_temporary_files(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    out = tmp_path / "study.md"
    command = [
        *[sys.executable, "-m", "avgk_lightning.study", "--methods=softmax", "--seeds=2", "--max-epochs=1"],
        *["--seed-args=data.init_args.seed", "--jobs=2", *TINY, f"--out={out}"],
    ]
    code, output = run_process_group(command, timeout=400, extra_env={"TMPDIR": str(temporary)})
    assert code == 0, output[-4000:]
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert sorted(run["seed"] for run in runs) == [0, 1]
    assert list(temporary.iterdir()) == []
