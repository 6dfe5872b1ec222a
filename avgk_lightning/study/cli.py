"""``avgk-compare``: compare training methods over seeds and data settings on any config, and write the tables.

Each training run is ``train.py fit`` of ``--config`` with ``--model.init_args.method METHOD``,
``--seed_everything SEED`` (seeds 0..S-1: model initialisation and batch order; with ``--seed-args KEY,...``
those data arguments, e.g. the split and noise seeds, take the seed's value too, so each seed draws its own
data), ``--trainer.max_epochs``, the config's optimizer and the module's default learning-rate schedule;
``--set`` passes any other override to every run (``--set data.init_args.noise=0.4``). Each run is then
tested from the checkpoints named by ``--checkpoints``: ``best`` (the epoch with the best validation
average-K accuracy at the model's K) and/or ``last``, each with the λ_K calibrated on validation at that epoch.

Which models are compared: with ``--per-k K1,K2,...`` a method whose training depends on K (the two-head
pseudo-labels, the expected positives of EPR and ROLE) trains one model per K, evaluated at that K; a
method that does not (softmax, AN, AN-LS, WAN, EM) trains one model, evaluated at every K. Without it, every
method trains one model at the config's ``k``, evaluated at every K of its ``eval_ks``.

Settings: ``--sweep KEY=V1,V2,...`` makes one setting per value; each ``--setting "KEY=VALUE ..."`` adds one.
``--variant "LABEL=METHOD KEY=VALUE ..."`` adds a row trained with METHOD plus the overrides.
Every row is paired against softmax (same seed and data); ``--against LABEL[:HEAD]`` pairs every other row
against that row's head too (``--against two_head:chosen``: each baseline against the two-head model's
head chosen on validation).

A study survives its length: with ``--out FILE.md`` every finished run is appended at once to the run journal
``FILE.runs.jsonl``, and ``FILE.md`` and ``FILE.json`` are rewritten from the runs so far. The same command,
run again, resumes: the journal's runs whose key is in the plan are not repeated, so a study can also grow
(more seeds, settings or rows). ``FILE.md`` is never written over unless its journal lies beside it.
``--from-json FILE.json`` renders the tables of saved runs without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from avgk_lightning.losses import LOSSES
from avgk_lightning.naming import format_k
from avgk_lightning.study.journal import append_journal, journal_path, read_journal, write_atomically
from avgk_lightning.study.paired import SET_PREFIX
from avgk_lightning.study.plan import StudyPlan, depends_on_k
from avgk_lightning.study.records import Job, Row, RunRecord, SavedStudy
from avgk_lightning.study.tables import parse_against, render
from avgk_lightning.study.training import run_jobs

__all__ = ["main", "parse_plan"]

ALL_METHODS = ("two_head", "softmax", "an", "an_ls", "wan", "epr", "role", "em")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].partition(": ")[2])
    parser.add_argument("--config", default="configs/synthetic_two_head.yaml")
    parser.add_argument("--methods", default="all", help=f"comma-separated, or 'all' ({','.join(ALL_METHODS)})")
    parser.add_argument("--per-k", default=None, metavar="K1,K2,...", help="one model per K for K-dependent methods")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CLI override for every run")
    parser.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...", help="one setting per value of KEY")
    parser.add_argument("--setting", action="append", default=[], metavar='"KEY=VALUE ..."', help="one more setting")
    parser.add_argument("--variant", action="append", default=[], metavar='"LABEL=METHOD KEY=VALUE ..."')
    parser.add_argument(
        "--seed-args",
        default="",
        metavar="KEY,KEY",
        help="arguments also set to the run's seed, e.g. the data's noise and split seeds (each seed its own data)",
    )
    parser.add_argument("--checkpoints", default="best", help="comma-separated: best, last")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (each on cores/jobs threads)")
    parser.add_argument(
        "--order",
        choices=("cell", "breadth"),
        default="cell",
        help="cell: every run of a setting before the next; breadth: seed by seed, the methods of every setting "
        "before the variants, so that a long study gives a first paired seed of every cell early",
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="LABEL[:HEAD]",
        help="pair every other row against this row too (HEAD: set, softmax or chosen; default set), besides softmax",
    )
    parser.add_argument("--out", default=None, help="Markdown file to write (never overwritten); raw results in .json")
    parser.add_argument(
        "--from-json", default=None, metavar="FILE.json", help="render the tables of saved runs (no training)"
    )
    return parser


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[tuple[str, ...], ...]:
    if args.sweep is not None and ("=" not in args.sweep or not args.sweep.split("=", 1)[1]):
        parser.error(f"--sweep must look like KEY=V1,V2,..., got {args.sweep!r}")
    settings = []
    if args.sweep is not None:
        key, values = args.sweep.split("=", 1)
        settings += [(f"{key}={value}",) for value in values.split(",")]
    for setting in args.setting:
        overrides = tuple(setting.split())
        if not overrides or any("=" not in override for override in overrides):
            parser.error(f'--setting must look like "KEY=VALUE KEY=VALUE ...", got {setting!r}')
        settings.append(overrides)
    return tuple(settings) or ((),)


def _rows(parser: argparse.ArgumentParser, args: argparse.Namespace, per_k: bool) -> tuple[Row, ...]:
    methods = list(ALL_METHODS) if args.methods == "all" else args.methods.split(",")
    unknown = [method for method in methods if method not in LOSSES and "." not in method]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} (argument --methods): choose among {sorted(LOSSES)}")
    rows = [Row(method, method, (), per_k and depends_on_k(method)) for method in methods]
    for variant in args.variant:
        head, *overrides = variant.split()
        label, _, method = head.partition("=")
        if not label or method not in LOSSES or any("=" not in override for override in overrides):
            parser.error(f'--variant must look like "LABEL=METHOD KEY=VALUE ...", with a known METHOD, got {variant!r}')
        # A variant that sets its own K (e.g. a multi-label head per K: model.init_args.k=[1.5,2,3]) is one model.
        own_k = any(override.startswith("model.init_args.k=") for override in overrides)
        rows.append(Row(label, method, tuple(overrides), per_k and depends_on_k(method) and not own_k))
    return tuple(rows)


def parse_plan(argv: Sequence[str] | None, prog: str = "avgk-compare") -> tuple[StudyPlan, argparse.Namespace]:
    """The study plan of a command line, and its other options (``out``, ``from_json``, ``jobs``).

    Example:
        >>> plan, options = parse_plan(["--methods", "softmax,two_head", "--per-k", "1.5,2", "--seeds", "2"])
        >>> [(row.label, row.per_k) for row in plan.rows], plan.per_k, len(plan.jobs()), options.jobs
        ([('softmax', False), ('two_head', True)], (1.5, 2.0), 6, 1)
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.max_epochs < 1 or args.jobs < 1:
        parser.error("--seeds, --max-epochs and --jobs must be >= 1")
    try:
        per_k = None if args.per_k is None else tuple(float(value) for value in args.per_k.split(","))
    except ValueError:
        parser.error(f"--per-k must be numbers separated by commas, got {args.per_k!r}")
    checkpoints = tuple(args.checkpoints.split(","))
    if any(name not in ("best", "last") for name in checkpoints):
        parser.error(f"--checkpoints must be best, last or best,last, got {args.checkpoints!r}")
    plan = StudyPlan(
        config=args.config,
        rows=_rows(parser, args, per_k is not None),
        settings=_settings(parser, args),
        seeds=args.seeds,
        max_epochs=args.max_epochs,
        overrides=tuple(args.set),
        seed_args=tuple(key for key in args.seed_args.split(",") if key),
        per_k=per_k,
        checkpoints=checkpoints,
        order=args.order,
    )
    if args.from_json is not None and not Path(args.from_json).is_file():
        parser.error(f"--from-json {args.from_json}: no such file (the .json that {prog} writes beside --out)")
    labels = (
        [row.label for row in plan.rows]
        if args.from_json is None
        else [row["label"] for row in json.loads(Path(args.from_json).read_text())["rows"]]
    )
    for spec in args.against:
        try:
            label, _ = parse_against(spec)
        except ValueError as error:
            parser.error(f"--against {error}")
        if label not in labels:
            parser.error(f"--against {spec}: no row {label!r} in the study; its rows are {', '.join(labels)}")
    if args.out is not None:
        writes = [Path(args.out)] + ([Path(args.out).with_suffix(".json")] if args.from_json is None else [])
        resumable = args.from_json is None and journal_path(args.out).exists()
        if any(path.exists() for path in writes) and not resumable:
            parser.error(
                f"--out {args.out} exists (or its .json) without the run journal {journal_path(args.out).name} that "
                f"{prog} keeps beside its tables: pass a new file name (results are never overwritten)"
            )
    return plan, args


def _progress(started: float, job: Job, record: RunRecord, checkpoints: Sequence[str]) -> str:
    k = format_k(record.k)
    scores = ", ".join(
        f"{name} (epoch {record.epochs[name]}) {record.results[name][f'{SET_PREFIX}avgk_acc@{k}']:.4f}"
        for name in checkpoints
    )
    return (
        f"[{time.perf_counter() - started:7.1f} s] {job.setting or 'config'} | {job.row.label} k={k} seed "
        f"{job.seed}: test/avgk_acc@{k} {scores}; train top-1 {record.train_top1_acc[-1]:.4f} ({record.seconds:.0f} s)"
    )


def _saved(
    plan: StudyPlan, command: str, runs: list[RunRecord], parallel: int, against: Sequence[str] = ()
) -> SavedStudy:
    hours = sum(run.seconds or 0.0 for run in runs) / 3600
    return SavedStudy(
        command=command,
        header=[
            f"Command: `{command}`",
            "",
            (
                f"Config `{plan.config}`, {plan.seeds} seed(s) (also given to "
                f"{', '.join(plan.seed_args) or 'nothing else'}), {plan.max_epochs} epoch(s), overrides "
                f"{list(plan.overrides) or 'none'}, checkpoints {', '.join(plan.checkpoints)}; {len(runs)} of "
                f"{len(plan.jobs())} training runs done, {hours:.1f} h of training in all "
                f"({os.cpu_count()} CPU cores visible, {parallel} run(s) at a time)."
            ),
        ],
        settings=plan.setting_labels,
        ks=list(plan.per_k) if plan.per_k else sorted({k for run in runs for k in run.eval_ks}),
        checkpoints=list(plan.checkpoints),
        rows=list(plan.rows),
        runs=runs,
        against=list(against) or None,
    )


def _write(out: Path, saved: SavedStudy) -> None:
    write_atomically(out, render(saved))
    write_atomically(out.with_suffix(".json"), json.dumps(saved.to_dict()))


def run_study(
    plan: StudyPlan, command: str, out: Path | None, parallel: int = 1, against: Sequence[str] = ()
) -> SavedStudy:
    """Train what the journal beside `out` lacks, keeping the journal and the tables up to date after every run.

    `against`: the rows every other row is also paired against in the tables (see ``--against``).
    """
    started = time.perf_counter()
    journal = None if out is None else journal_path(out)
    done = {} if journal is None else read_journal(journal)
    finished_runs = list(done.values())
    planned = {plan.key(job) for job in plan.jobs()}

    def finished(job: Job, record: RunRecord) -> None:
        # The journal first (the study's state), then the tables, rewritten from every run finished so far.
        if journal is not None:
            append_journal(journal, record)
            finished_runs.append(record)
            done_runs = [run for run in finished_runs if run.key in planned]
            _write(out, _saved(plan, command, done_runs, parallel, against))
        print(_progress(started, job, record, plan.checkpoints), flush=True)

    return _saved(plan, command, run_jobs(plan, done, finished, parallel), parallel, against)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM (``kill``, a scheduler's preemption) into an exit that removes the study's temporary files."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, prog: str = "avgk-compare") -> None:
    """Run the command line `argv` (default ``sys.argv[1:]``) and print the tables.

    `prog` is how the tables' header names the command.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    arguments = list(sys.argv[1:] if argv is None else argv)
    plan, args = parse_plan(arguments, prog)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    command = " ".join([prog, *map(shlex.quote, arguments)]).strip()
    if args.from_json is not None:
        saved = SavedStudy.from_dict(json.loads(Path(args.from_json).read_text()))
        header = saved.header or [f"Command: `{saved.command}`"]
        saved = dataclasses.replace(
            saved,
            header=[*header, "", f"Tables rendered from the saved runs by `{command}`."],
            against=args.against or saved.against,
        )
        text = render(saved)
        if args.out is not None:
            with open(args.out, "x") as handle:  # never overwrite
                handle.write(text)
    else:
        saved = run_study(plan, command, None if args.out is None else Path(args.out), args.jobs, args.against)
        text = render(saved)
        if args.out is not None:
            _write(Path(args.out), saved)
    print(text)
