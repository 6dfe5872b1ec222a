"""avgk_lightning.study: paired differences, tables and plans from fabricated runs, and every committed study."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys

import pytest

from avgk_lightning.study import Row, RunRecord, SavedStudy, StudyPlan, depends_on_k, render
from avgk_lightning.study.cli import parse_plan
from avgk_lightning.study.journal import journal_path, read_journal
from avgk_lightning.study.paired import paired_differences, paired_verdict
from avgk_lightning.study.tables import report, with_head_chosen_on_validation
from tests.helpers import ROOT

RESULTS = ROOT / "benchmarks" / "results"
SAVED_STUDIES = sorted(path for path in RESULTS.glob("*.json") if "runs" in json.loads(path.read_text()))


def _record(label, method, seed, k, per_k, values, epochs=(3, 9), epoch_metrics=None):
    """A fabricated run: `values` maps (prefix, metric, K) to its value at both checkpoints."""
    results = {f"{prefix}{metric}@{format(key, 'g')}": value for (prefix, metric, key), value in values.items()}
    return RunRecord(
        setting="noise=0.4",
        label=label,
        method=method,
        seed=seed,
        k=k,
        per_k=per_k,
        eval_ks=[1.5, 2.0],
        results={"best": results, "last": dict(results)},
        epochs={"best": epochs[0], "last": epochs[1]},
        train_top1_acc=[0.5 + 0.05 * epoch for epoch in range(10)],
        epoch_metrics=epoch_metrics,
    )


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
    records = _fabricated()
    for k in (1.5, 2.0):
        differences = paired_differences(records, "noise=0.4", "two_head", "test/", "softmax", "avgk_acc", k, "best")
        assert differences == pytest.approx([0.02, -0.01, 0.0002])
        own_softmax = paired_differences(
            records, "noise=0.4", "two_head", "test/softmax/", "softmax", "avgk_acc", k, "last"
        )
        assert own_softmax == pytest.approx([-0.01 * k] * 3)
    assert paired_differences(records, "noise=0.4", "two_head", "test/", "softmax", "avgk_acc", 3.0, "best") is None


def test_tables_say_which_rows_are_one_model_per_k_and_count_signs():
    text = report(_fabricated(), ["noise=0.4"], ["two_head", "softmax"], [1.5, 2.0], ["best", "last"])
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


def test_against_pairs_every_other_row_with_the_named_head_of_a_reference_row():
    text = report(
        _fabricated(), ["noise=0.4"], ["two_head", "softmax"], [1.5, 2.0], ["best", "last"],
        against=["two_head:softmax", "two_head"],
    )  # fmt: skip
    # softmax's sets (base + 0.01 K) minus two_head's softmax head (base), at every seed
    assert "| softmax - two_head, its softmax head | 1.5 | +0.0150 +0.0150 +0.0150 | +0.0150 | 3 / 0 / 0 |" in text
    assert "| softmax - two_head | 2 | -0.0200 +0.0100 -0.0002 | -0.0034 | 1 / 1 / 1 |" in text
    summary = text.split("**Summary: paired differences**", 1)[1]
    assert "| noise=0.4 | softmax - two_head, its softmax head | 2 | +0.0200 (3 / 0 / 0) win | - | - |" in summary
    assert "two_head - two_head" not in text  # a row is not paired with itself
    plain = report(_fabricated(), ["noise=0.4"], ["two_head", "softmax"], [1.5, 2.0], ["best", "last"])
    added = [line for line in text.splitlines() if " - two_head" in line]
    assert "softmax - two_head" not in plain
    assert [line for line in text.splitlines() if line not in added] == plain.splitlines()  # the rest is unchanged


def test_against_names_a_row_and_head_of_the_study_or_fails_with_the_fix(tmp_path, capsys):
    for spec, message in [
        ("two_head:oracle", "HEAD one of set, softmax, chosen"),
        ("roles", "no row 'roles' in the study; its rows are softmax, two_head"),
    ]:
        with pytest.raises(SystemExit):
            parse_plan(["--methods", "softmax,two_head", "--against", spec])
        assert message in capsys.readouterr().err
    saved_path = RESULTS / "fashion_mnist_baselines.json"
    out = tmp_path / "against.md"
    # in a process of its own: the CLI sets Lightning's log level and a SIGTERM handler for its process
    command = ["--from-json", str(saved_path), "--against", "two_head:chosen", "--out", str(out)]
    subprocess.run([sys.executable, "-m", "avgk_lightning.study", *command], check=True, capture_output=True)
    # the reference, computed here from the raw runs: EM's sets minus the two-head model's chosen head, per seed
    runs = [
        with_head_chosen_on_validation(run) for run in SavedStudy.from_dict(json.loads(saved_path.read_text())).runs
    ]
    by_label = {(run.label, run.seed): run.results["last"] for run in runs}
    differences = [
        by_label["em", seed]["test/avgk_acc@2"] - by_label["two_head", seed]["test/chosen/avgk_acc@2"]
        for seed in range(3)
    ]
    row = f"| em - two_head, the head better on validation | 2 | {' '.join(f'{d:+.4f}' for d in differences)} |"
    last_tables = out.read_text().split("`last` checkpoint", 1)[1]
    assert row in last_tables


def test_only_k_dependent_methods_train_one_model_per_k():
    assert [depends_on_k(m) for m in ("two_head", "epr", "role", "softmax", "an", "em")] == [True] * 3 + [False] * 3
    plan, _ = parse_plan(["--methods", "softmax,two_head,epr", "--per-k", "1.5,2", "--seeds", "1"])
    assert [(job.row.label, job.k) for job in plan.jobs()] == [
        ("softmax", None), ("two_head", 1.5), ("two_head", 2.0), ("epr", 1.5), ("epr", 2.0),
    ]  # fmt: skip


def test_the_head_chosen_on_validation_is_the_better_one_at_each_checkpoint_epoch():
    epoch_metrics = [{"val/avgk_acc@2": 0.5, "val/softmax/avgk_acc@2": 0.5} for _ in range(10)]
    epoch_metrics[3] = {"val/avgk_acc@2": 0.80, "val/softmax/avgk_acc@2": 0.81}  # best: the softmax head
    epoch_metrics[9] = {"val/avgk_acc@2": 0.82, "val/softmax/avgk_acc@2": 0.82}  # last: a tie
    record = _record(
        "two_head", "two_head", 0, 2.0, True,
        {("test/", "avgk_acc", 2.0): 0.90, ("test/softmax/", "avgk_acc", 2.0): 0.93,
         ("test/", "set_size", 2.0): 2.1, ("test/softmax/", "set_size", 2.0): 1.9},
        epoch_metrics=epoch_metrics,
    )  # fmt: skip
    record.results["last"]["test/avgk_acc@2"] = 0.95
    chosen = with_head_chosen_on_validation(record).results
    assert chosen["best"]["test/chosen/avgk_acc@2"] == 0.93 and chosen["best"]["test/chosen/set_size@2"] == 1.9
    assert chosen["last"]["test/chosen/avgk_acc@2"] == 0.95 and chosen["last"]["test/chosen/set_size@2"] == 2.1
    assert "test/chosen/avgk_acc@2" not in record.results["best"]  # the record itself is left as it was
    softmax = _record(
        "softmax", "softmax", 0, 2.0, False, {("test/", "avgk_acc", 2.0): 0.91},
        epoch_metrics=[{"val/avgk_acc@2": 0.8}] * 10,
    )  # fmt: skip
    assert with_head_chosen_on_validation(softmax) == softmax  # one head: nothing to choose
    saved = SavedStudy(
        command="c", runs=[record, softmax], rows=[Row("two_head", "two_head", (), True), Row("softmax", "softmax")],
        settings=["noise=0.4"], ks=[2.0], checkpoints=["best", "last"],
    )  # fmt: skip
    text = render(saved)
    assert "| two_head, the head better on validation - softmax | 2 | +0.0200 | +0.0200 | 1 / 0 / 0 |" in text
    assert "| two_head, the head better on validation (one model per K) | 0.9300 |" in text


def test_a_cell_is_won_or_lost_only_when_the_paired_t_interval_excludes_zero():
    # mean 0.02, sample std 0.01: half-width 4.303 * 0.01 / sqrt(3) = 0.0248 > 0.02
    assert paired_verdict([0.01, 0.02, 0.03]) == "tie"
    # mean 0.021, sample std 0.001: half-width 0.0025 < 0.021
    assert paired_verdict([0.020, 0.021, 0.022]) == "win"
    assert paired_verdict([-0.020, -0.021, -0.022]) == "loss"
    # five seeds: t = 2.776, std 0.0158, half-width 0.0196 against a mean of 0.02
    assert paired_verdict([0.0, 0.01, 0.02, 0.03, 0.04]) == "win"
    assert paired_verdict([0.05]) == "tie"  # one seed decides nothing


def test_breadth_order_plans_the_same_runs_seed_by_seed_with_the_methods_before_the_variants():
    argv = [
        "--methods", "softmax,two_head", "--seeds", "2",
        "--variant", "mean=two_head model.init_args.mu=0.1",
        "--setting", "a=1", "--setting", "a=2",
    ]  # fmt: skip
    by_cell = parse_plan(argv)[0].jobs()
    breadth_plan = parse_plan([*argv, "--order", "breadth"])[0]
    breadth = breadth_plan.jobs()
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
    # The order is not part of a run's key: a study resumes whichever order it is run in.
    assert {breadth_plan.key(job) for job in breadth} == {parse_plan(argv)[0].key(job) for job in by_cell}
    assert len({breadth_plan.key(job) for job in breadth}) == len(breadth)


def test_a_run_key_changes_with_everything_that_decides_the_numbers():
    plan = StudyPlan("configs/fashion_mnist_two_head.yaml", (Row("softmax", "softmax"),), max_epochs=30)
    job = plan.jobs()[0]
    changed = [
        dataclasses.replace(plan, config="configs/other.yaml"),
        dataclasses.replace(plan, max_epochs=31),
        dataclasses.replace(plan, checkpoints=("best", "last")),
        dataclasses.replace(plan, per_k=(2.0,)),
    ]
    assert len({plan.key(job), *(other.key(job) for other in changed)}) == 5
    assert plan.key(dataclasses.replace(job, seed=1)) != plan.key(job)
    assert plan.key(dataclasses.replace(job, overrides=("data.init_args.noise=0.2",))) != plan.key(job)


def _body(markdown: str) -> list[str]:
    """The per-setting tables: from the first setting's title to the summary."""
    lines = markdown.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("### "))
    end = next((index for index, line in enumerate(lines) if line.startswith("**Summary")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("path", SAVED_STUDIES, ids=[path.stem for path in SAVED_STUDIES])
def test_every_committed_study_reads_back_exactly_and_renders_its_tables(path):
    data = json.loads(path.read_text())
    saved = SavedStudy.from_dict(data)
    assert json.dumps(saved.to_dict()) == json.dumps(data)  # field for field, in the same order
    text = render(saved)
    committed = path.with_suffix(".md").read_text()
    if journal_path(path).exists():  # a study written by this renderer: the whole file, to the character
        assert text == committed
    else:  # older studies: their header and summary table had fewer columns; every setting's tables are the same
        assert _body(text) == _body(committed) and len(_body(text)) > 20


@pytest.mark.parametrize("name", ["recipe_grid", "multi_k"])
def test_the_committed_journals_resume_under_the_plan_of_their_own_command(name):
    saved = json.loads((RESULTS / f"{name}.json").read_text())
    words = shlex.split(saved["command"])  # "python benchmarks/compare.py --config ..." or "avgk-compare --config ..."
    argv = words[next(index for index, word in enumerate(words) if word.startswith("--")) :]
    out = argv.index("--out")
    plan, _ = parse_plan(argv[:out] + argv[out + 2 :])
    planned = {plan.key(job) for job in plan.jobs()}
    journal = read_journal(RESULTS / f"{name}.runs.jsonl")
    assert journal and set(journal) <= planned  # every finished run is reused: none is trained again
    assert [run.to_dict() for run in journal.values()] == [
        json.loads(line) for line in (RESULTS / f"{name}.runs.jsonl").read_text().splitlines()
    ]
