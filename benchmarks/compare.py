"""Compare training methods over seeds and data settings, and write Markdown tables (plus the raw results as JSON).

Usage:
    python benchmarks/compare.py [--config CONFIG] [--methods all] [--per-k K1,K2,...] [--seeds 3]
        [--max-epochs 3] [--set KEY=VALUE ...] [--sweep KEY=V1,V2,...] [--setting "KEY=VALUE ..." ...]
        [--variant "LABEL=METHOD KEY=VALUE ..." ...] [--checkpoints best,last] [--jobs 1] [--out FILE.md]

Each training run is ``train.py fit`` with ``--model.init_args.method METHOD``, ``--seed_everything SEED``
(seeds 0..S-1: model initialisation and batch order; with ``--seed-args KEY,...`` those data
arguments, e.g. the split and noise seeds, take the seed's value too, so each seed draws its own data),
``--trainer.max_epochs``, the config's optimizer and the module's default learning-rate schedule
(divided by 10 at 50% and 75% of the epochs); `--set` passes any other command-line override to every
run (``--set data.init_args.noise=0.4``). Each run is then tested
from the checkpoints named by ``--checkpoints``: ``best`` (the epoch with the best validation average-K
accuracy at the model's K, the reference protocol) and/or ``last`` (the final epoch), each with the λ_K
calibrated on validation at that epoch.

Which models are compared:

* ``--per-k K1,K2,...`` (the paper's comparison): a method whose training depends on K (the two-head
  pseudo-labels, the expected positives of EPR and ROLE) trains **one model per K** with
  ``--model.init_args.k K`` and is evaluated at that K only; a method that does not depend on K
  (softmax, AN, AN-LS, WAN, EM) trains one model, evaluated at every K. Tables say which rows are which.
* without ``--per-k``: every method trains one model at the config's `k`, evaluated at every K of its
  ``eval_ks`` (rows say "one model, k=..., at every K").

Data settings: ``--sweep KEY=V1,V2,...`` makes one setting per value; each ``--setting "KEY=VALUE
KEY=VALUE ..."`` adds one setting of several overrides (e.g. a long-tailed one). ``--variant "LABEL=METHOD
KEY=VALUE ..."`` adds a row trained with METHOD plus the given overrides (ablations, e.g.
``--variant 'bce sum=two_head model.init_args.loss_options={"bce_reduction":"sum"}'``).

The Markdown file holds, per setting and checkpoint: test average-K accuracy, macro (mean per class)
average-K accuracy and, where the data have few-sample classes, their average-K accuracy, as mean ±
std over seeds; the paired difference to softmax (same seed, same data) per seed with its mean and its
wins / ties / losses (a tie: |difference| < 0.0005), and of each variant to the plain two_head; the
epochs the checkpoints come from and the training top-1 accuracy on the (noisy) training labels at
those epochs, which tells whether the network fits its training labels (the memorisation regime).
For a two-head model, rows and comparisons also give "the head better on validation": at each checkpoint's
epoch, the test metrics of whichever head (multi-label or softmax) had the higher validation average-K
accuracy at the model's K. A summary table gives the paired differences of every setting. ``--jobs N``
runs N trainings at a time, each on ``cores / N`` threads (on a 2-core host one at a time is faster: see
benchmarks/README.md). The command line and the hours of training are written at the top.

A study survives its length: with ``--out FILE.md``, every finished run is appended at once to the run
journal ``FILE.runs.jsonl``, and ``FILE.md`` and ``FILE.json`` are rewritten (atomically) from the runs
so far. The same command, run again after an interruption, resumes: the runs of the journal whose key
(config, setting, row, seed, K, overrides, epochs, checkpoints) is in the plan are not repeated, so a
study can also grow (more seeds, settings or rows) without retraining what it has. ``FILE.md`` is never
written over unless its journal lies beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import json
import logging
import math
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from lightning.pytorch import Callback

from avgk_lightning.cli import run_cli
from avgk_lightning.losses import LOSSES, _resolve_loss_class
from avgk_lightning.naming import format_k
from avgk_lightning.naming import prefix as logged_prefix

# The logged test names of the head that makes the sets, of the softmax head and of the Bayes oracle.
SET_PREFIX = logged_prefix("test", "set", set_head="set")  # "test/"
SOFTMAX_PREFIX = logged_prefix("test", "softmax", set_head="set")  # "test/softmax/"
ORACLE_PREFIX = logged_prefix("test", "oracle", set_head="set")  # "test/oracle/"
# Derived rows of a two-head run: the test metrics of whichever head was better on validation.
CHOSEN_PREFIX = "test/chosen/"

ALL_METHODS = ("two_head", "softmax", "an", "an_ls", "wan", "epr", "role", "em")
TIE = 0.0005
METRICS = (
    ("avgk_acc", "Test average-K accuracy"),
    ("avgk_acc_macro", "Test macro (mean per class) average-K accuracy"),
    ("avgk_acc_few", "Test average-K accuracy on the few-sample classes"),
    ("set_size", "Test mean set size"),
)
PAIRED_METRICS = (
    ("avgk_acc", "average-K accuracy"),
    ("avgk_acc_macro", "macro average-K accuracy"),
    ("avgk_acc_few", "few-class average-K accuracy"),
)


@dataclass(frozen=True)
class Row:
    """One trained configuration: a method plus overrides, trained once or once per K."""

    label: str
    method: str
    overrides: tuple[str, ...] = ()
    per_k: bool = False


@dataclass(frozen=True)
class Job:
    """One training run: a row, in a setting, with a seed (and the K it trains for, if per K)."""

    setting: str
    row: Row
    seed: int
    k: float | None = None
    overrides: tuple[str, ...] = ()


def depends_on_k(method: str) -> bool:
    """Whether a method's training depends on K (its pseudo-labels or expected positives).

    Example:
        >>> depends_on_k("two_head"), depends_on_k("softmax"), depends_on_k("epr")
        (True, False, True)
    """
    loss_class = _resolve_loss_class(method)
    return bool(loss_class.uses_pseudo_labels) or "k" in inspect.signature(loss_class.__init__).parameters


class _EpochRecorder(Callback):
    """Keeps, for every training epoch, its training metrics and the validation average-K accuracies after it.

    ``train_top1_acc`` holds the epoch value of ``train/top1_acc``; ``epoch_metrics`` one dict per epoch
    with every ``train/`` epoch value (the loss terms) and every ``val/`` average-K accuracy (each head, each
    K): how fast each head learns.
    """

    def __init__(self) -> None:
        self.train_top1_acc: list[float] = []
        self.epoch_metrics: list[dict[str, float]] = []

    def _record(self, trainer: Any) -> None:
        metrics = trainer.callback_metrics
        self.train_top1_acc.append(float(metrics.get("train/top1_acc", float("nan"))))
        self.epoch_metrics.append(
            {
                name: float(value)
                for name, value in metrics.items()
                if (name.startswith("train/") and not name.endswith("_step"))
                or (name.startswith("val/") and "avgk_acc@" in name)
            }
        )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        # The epoch metrics of the previous epoch are computed after every on_train_epoch_end hook.
        if trainer.current_epoch > 0 and len(self.train_top1_acc) < trainer.current_epoch:
            self._record(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer)


def build_run(config: str, seed: int, max_epochs: int, root: str, overrides: Sequence[str]) -> Any:
    """``train.py fit`` of `config` built, not run: quiet, no logger, in `root`, the module's default schedule.

    `overrides` are ``KEY=VALUE`` command-line overrides. Returns the CLI (``.trainer``, ``.model``,
    ``.datamodule``).
    """
    args = [
        f"--config={config}",
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={max_epochs}",
        "--model.init_args.lr_scheduler=null",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        *(f"--{override}" for override in overrides),
    ]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI reads `args`, not this script's own arguments
    try:
        return run_cli(args, run=False)
    finally:
        sys.argv = argv


def run_job(
    config: str, job: Job, max_epochs: int, checkpoints: Sequence[str], root: str, eval_ks: Sequence[float] | None
) -> dict[str, Any]:
    """Fit one job in its own folder `root`, test it from each checkpoint.

    Returns its test metrics per checkpoint, the checkpoints' epochs and the training accuracy per epoch.
    """
    started = time.perf_counter()
    cli = build_run(
        config,
        job.seed,
        max_epochs,
        root,
        [
            f"model.init_args.method={job.row.method}",
            *job.overrides,
            *job.row.overrides,
            *([f"model.init_args.k={job.k}"] if job.k is not None else []),
            *([f"model.init_args.eval_ks=[{','.join(map(str, eval_ks))}]"] if eval_ks is not None else []),
        ],
    )
    recorder = _EpochRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    paths = {name: callback.best_model_path for name, callback in cli.checkpoint_callbacks().items()}
    results, epochs = {}, {}
    for name in checkpoints:
        (metrics,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=paths[name], verbose=False)
        results[name] = {key: float(value) for key, value in metrics.items()}
        epochs[name] = int(torch.load(paths[name], map_location="cpu", weights_only=True)["epoch"])
    return {
        "setting": job.setting,
        "label": job.row.label,
        "method": job.row.method,
        "seed": job.seed,
        "k": cli.model.k,
        "trained_ks": list(cli.model.ks),
        "per_k": job.row.per_k,
        "eval_ks": list(cli.model.eval_ks),
        "results": results,
        "epochs": epochs,
        "train_top1_acc": recorder.train_top1_acc,
        "epoch_metrics": recorder.epoch_metrics,
        "seconds": time.perf_counter() - started,
    }


def _run_job_in_worker(threads: int, *args: Any) -> dict[str, Any]:
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    return run_job(*args)


# ---------------------------------------------------------------------------------------------------- tables


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    mean = _mean(values)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def _signs(differences: Sequence[float]) -> str:
    wins = sum(d >= TIE for d in differences)
    losses = sum(d <= -TIE for d in differences)
    return f"{wins} / {len(differences) - wins - losses} / {losses}"


# Two-sided 95% quantiles of Student's t distribution by degrees of freedom (seeds - 1).
_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired_verdict(differences: Sequence[float]) -> str:
    """``win`` or ``loss`` when the 95% paired t-interval of the mean difference excludes 0, else ``tie``.

    Seeds are few, so a cell is a win or a loss only when its seeds agree well beyond their spread; one
    seed cannot decide (``tie``).

    Example:
        >>> paired_verdict([0.010, 0.012, 0.011]), paired_verdict([0.02, -0.01, 0.004])
        ('win', 'tie')
        >>> paired_verdict([-0.05, -0.04, -0.06])
        'loss'
    """
    n = len(differences)
    if n < 2:
        return "tie"
    mean = _mean(differences)
    deviation = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half_width = _T_975.get(n - 1, 2.0) * deviation / math.sqrt(n)
    if mean - half_width > 0:
        return "win"
    return "loss" if mean + half_width < 0 else "tie"


def _runs(records: Sequence[dict], setting: str, label: str, k: float) -> list[dict]:
    """The runs of `label` in `setting` that are evaluated at `k`, ordered by seed."""
    runs = [
        record
        for record in records
        if record["setting"] == setting
        and record["label"] == label
        and (record["k"] == k if record["per_k"] else k in record["eval_ks"])
    ]
    return sorted(runs, key=lambda record: record["seed"])


def _value(record: dict, checkpoint: str, prefix: str, metric: str, k: float) -> float | None:
    return record["results"][checkpoint].get(f"{prefix}{metric}@{format_k(k)}")


def _row_title(record: dict, head: str) -> str:
    if record["per_k"]:
        scope = "one model per K"
    elif len(record.get("trained_ks", ())) > 1:
        scope = "one model, a multi-label head per K"
    elif not depends_on_k(record["method"]):
        scope = "one model, at every K"
    else:
        scope = f"one model, k={format_k(record['k'])}, at every K"
    if head == "set":
        return f"{record['label']} ({scope})"
    return f"{record['label']}, {HEAD_NAMES[head]} ({scope})"


HEAD_NAMES = {"softmax": "its softmax head", "chosen": "the head better on validation"}


def _heads(record: dict) -> list[tuple[str, str]]:
    """(head key, metric prefix) of the rows of a run: the set head; for a two-head model its softmax head and
    the head chosen on validation."""
    heads = [("set", SET_PREFIX)]
    names = next(iter(record["results"].values()))
    if any(name.startswith(SOFTMAX_PREFIX) for name in names):
        heads.append(("softmax", SOFTMAX_PREFIX))
    if any(name.startswith(CHOSEN_PREFIX) for name in names):
        heads.append(("chosen", CHOSEN_PREFIX))
    return heads


def with_head_chosen_on_validation(record: dict) -> dict:
    """`record` plus, at each checkpoint, the test metrics of the head with the better validation accuracy.

    For a run with both heads and its per-epoch validation metrics: at the epoch of each checkpoint, the
    validation average-K accuracy at the model's K of the multi-label head and of the softmax head are
    compared, and the test metrics of the better one (the multi-label head on a tie) are added under
    ``test/chosen/``: a rule that needs the validation split alone. A model with a multi-label head per K
    chooses at each of its K (metrics at another K follow the choice at the model's K). Other records are
    returned unchanged.

    Example:
        >>> results = {"test/avgk_acc@2": 0.90, "test/softmax/avgk_acc@2": 0.93}
        >>> epochs = [{"val/avgk_acc@2": 0.91, "val/softmax/avgk_acc@2": 0.92}]
        >>> record = {"k": 2.0, "results": {"last": results}, "epochs": {"last": 0}, "epoch_metrics": epochs}
        >>> with_head_chosen_on_validation(record)["results"]["last"]["test/chosen/avgk_acc@2"]
        0.93
    """
    k = format_k(record["k"])
    epochs = record.get("epoch_metrics") or []
    if not epochs or f"val/softmax/avgk_acc@{k}" not in epochs[-1]:
        return record
    trained = [format_k(value) for value in record.get("trained_ks", ())]
    choices = trained if len(trained) > 1 else [k]
    results = {}
    for checkpoint, values in record["results"].items():
        validation = epochs[record["epochs"][checkpoint]]
        softmax_better = {
            choice: validation[f"val/softmax/avgk_acc@{choice}"] > validation[f"val/avgk_acc@{choice}"]
            for choice in choices
        }
        chosen = dict(values)
        for name, value in values.items():
            if name.startswith(SOFTMAX_PREFIX):
                metric = name.removeprefix(SOFTMAX_PREFIX)
                if softmax_better.get(metric.rpartition("@")[2], softmax_better[choices[0]]):
                    chosen[CHOSEN_PREFIX + metric] = value
                elif SET_PREFIX + metric in values:
                    chosen[CHOSEN_PREFIX + metric] = values[SET_PREFIX + metric]
        results[checkpoint] = chosen
    return {**record, "results": results}


def _metric_rows(records: Sequence[dict], setting: str, labels: Sequence[str], checkpoint: str):
    """(title, {k: [values per seed]}) for every row of the setting; the Bayes oracle last where known."""
    rows = []
    for label in labels:
        first = next((r for r in records if r["setting"] == setting and r["label"] == label), None)
        if first is None:
            continue
        for head, prefix in _heads(first):
            rows.append((_row_title(first, head), label, prefix))
    if any(name.startswith(ORACLE_PREFIX) for r in records for name in r["results"][checkpoint]):
        rows.append(("Bayes oracle", labels[0], ORACLE_PREFIX))
    return rows


def setting_tables(
    records: Sequence[dict], setting: str, labels: Sequence[str], ks: Sequence[float], checkpoint: str
) -> str:
    """The tables of one setting and one checkpoint (see the module docstring)."""
    lines = []
    header = "| model | " + " | ".join(f"K={format_k(k)}" for k in ks) + " |"
    rule = "|---" * (len(ks) + 1) + "|"
    rows = _metric_rows(records, setting, labels, checkpoint)
    for metric, title in METRICS:
        body = []
        for row_title, label, prefix in rows:
            cells = []
            for k in ks:
                runs = _runs(records, setting, label, k)
                values = [_value(run, checkpoint, prefix, metric, k) for run in runs]
                cells.append(_mean_std(values) if runs and None not in values else "-")
            if any(cell != "-" for cell in cells):
                body.append(f"| {row_title} | " + " | ".join(cells) + " |")
        if body:
            lines += ["", f"**{title}** (mean ± std over seeds)", "", header, rule, *body]
    lines += _paired_tables(records, setting, labels, ks, checkpoint)
    lines += _regime_table(records, setting, labels, checkpoint)
    return "\n".join(lines)


def paired_differences(
    records: Sequence[dict],
    setting: str,
    label: str,
    prefix: str,
    reference: str,
    metric: str,
    k: float,
    checkpoint: str,
) -> list[float] | None:
    """Per seed: `label`'s metric (head `prefix`) minus the `reference` row's set head, same seed; None if unpaired."""
    runs = {run["seed"]: run for run in _runs(records, setting, label, k)}
    references = {run["seed"]: run for run in _runs(records, setting, reference, k)}
    seeds = sorted(set(runs) & set(references))
    if not seeds:
        return None
    differences = []
    for seed in seeds:
        value = _value(runs[seed], checkpoint, prefix, metric, k)
        base = _value(references[seed], checkpoint, SET_PREFIX, metric, k)
        if value is None or base is None:
            return None
        differences.append(value - base)
    return differences


def _comparisons(records: Sequence[dict], setting: str, labels: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(title, label, head prefix, reference label) of every paired comparison of a setting."""
    comparisons = []
    if "softmax" in labels:
        for label in labels:
            if label == "softmax":
                continue
            first = next((r for r in records if r["setting"] == setting and r["label"] == label), None)
            if first is None:
                continue
            for head, prefix in _heads(first):
                name = label if head == "set" else f"{label}, {HEAD_NAMES[head]}"
                comparisons.append((f"{name} - softmax", label, prefix, "softmax"))
    if "two_head" in labels:
        for label in labels:
            method = next((r["method"] for r in records if r["label"] == label), None)
            if label != "two_head" and method == "two_head":
                comparisons.append((f"{label} - two_head", label, SET_PREFIX, "two_head"))
    return comparisons


def _paired_tables(records, setting, labels, ks, checkpoint) -> list[str]:
    lines = []
    for metric, title in PAIRED_METRICS:
        body = []
        for name, label, prefix, reference in _comparisons(records, setting, labels):
            for k in ks:
                differences = paired_differences(records, setting, label, prefix, reference, metric, k, checkpoint)
                if differences is None:
                    continue
                seeds = " ".join(f"{d:+.4f}" for d in differences)
                body.append(f"| {name} | {format_k(k)} | {seeds} | {_mean(differences):+.4f} | {_signs(differences)} |")
        if body:
            lines += [
                "",
                (
                    f"**Paired difference of test {title}** (same seed and data; wins / ties / losses over seeds, a tie "
                    f"being |difference| < {TIE})"
                ),
                "",
                "| comparison | K | per seed | mean | wins / ties / losses |",
                "|---|---|---|---|---|",
                *body,
            ]
    return lines


def _regime_table(records, setting, labels, checkpoint) -> list[str]:
    body = []
    for label in labels:
        runs = sorted(
            (r for r in records if r["setting"] == setting and r["label"] == label),
            key=lambda r: (r["k"] if r["per_k"] else 0, r["seed"]),
        )
        groups: dict[str, list[dict]] = {}
        for run in runs:
            groups.setdefault(f"k={format_k(run['k'])}" if run["per_k"] else "all K", []).append(run)
        for group, members in groups.items():
            epochs = [run["epochs"][checkpoint] for run in members]
            accuracy = [run["train_top1_acc"][epoch] for run, epoch in zip(members, epochs)]
            last = [run["train_top1_acc"][-1] for run in members]
            body.append(
                f"| {label} ({group}) | {', '.join(map(str, epochs))} | {_mean_std(accuracy)} | {_mean_std(last)} |"
            )
    if not body:
        return []
    return [
        "",
        (
            f"**Regime**: epochs (0-based) of the `{checkpoint}` checkpoints, per seed, and the top-1 accuracy on the "
            "training labels (noisy where the data are) during that epoch and the last one"
        ),
        "",
        "| model | checkpoint epochs | train top-1 acc at that epoch | train top-1 acc, last epoch |",
        "|---|---|---|---|",
        *body,
    ]


def summary_table(
    records: Sequence[dict],
    settings: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[float],
    checkpoints: Sequence[str],
) -> str:
    """Per setting, K and checkpoint: every paired difference to softmax (mean, wins / ties / losses)."""
    lines = [
        "",
        (
            "**Summary: paired differences** (mean over seeds, wins / ties / losses over seeds, and the verdict: "
            "win or loss when the 95% paired t-interval excludes 0) of test average-K accuracy, macro average-K "
            "accuracy and average-K accuracy on the few-sample classes"
        ),
        "",
        "| setting | comparison | K | "
        + " | ".join(
            f"{checkpoint}: {title.removesuffix(' average-K accuracy')}"
            for checkpoint in checkpoints
            for _, title in PAIRED_METRICS
        )
        + " |",
        "|---" * (3 + len(checkpoints) * len(PAIRED_METRICS)) + "|",
    ]
    for setting in settings:
        for name, label, prefix, reference in _comparisons(records, setting, labels):
            for k in ks:
                cells = []
                for checkpoint in checkpoints:
                    for metric, _ in PAIRED_METRICS:
                        differences = paired_differences(
                            records, setting, label, prefix, reference, metric, k, checkpoint
                        )
                        cells.append(
                            "-"
                            if differences is None
                            else f"{_mean(differences):+.4f} ({_signs(differences)}) {paired_verdict(differences)}"
                        )
                if any(cell != "-" for cell in cells):
                    lines.append(f"| {setting or 'config'} | {name} | {format_k(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(
    records: Sequence[dict],
    settings: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[float],
    checkpoints: Sequence[str],
) -> str:
    """The Markdown body: per setting and checkpoint the tables, then the summary when there are several."""
    parts = []
    for setting in settings:
        for checkpoint in checkpoints:
            title = f"### {setting or 'config'} — `{checkpoint}` checkpoint"
            parts += ["", title, setting_tables(records, setting, labels, ks, checkpoint)]
    if len(settings) > 1 or len(checkpoints) > 1:
        parts.append(summary_table(records, settings, labels, ks, checkpoints))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ arguments


def _setting_label(overrides: Sequence[str]) -> str:
    return " ".join(override.removeprefix("data.init_args.").removeprefix("model.init_args.") for override in overrides)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--out", default=None, help="Markdown file to write (never overwritten); raw results in .json")
    parser.add_argument(
        "--from-json", default=None, metavar="FILE.json", help="render the tables of saved runs (no training)"
    )
    args = parser.parse_args(argv)
    args.methods = list(ALL_METHODS) if args.methods == "all" else args.methods.split(",")
    unknown = [method for method in args.methods if method not in LOSSES and "." not in method]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} (argument --methods): choose among {sorted(LOSSES)}")
    if args.seeds < 1 or args.max_epochs < 1 or args.jobs < 1:
        parser.error("--seeds, --max-epochs and --jobs must be >= 1")
    try:
        args.per_k = None if args.per_k is None else [float(value) for value in args.per_k.split(",")]
    except ValueError:
        parser.error(f"--per-k must be numbers separated by commas, got {args.per_k!r}")
    args.seed_args = [key for key in args.seed_args.split(",") if key]
    args.checkpoints = args.checkpoints.split(",")
    if not args.checkpoints or any(name not in ("best", "last") for name in args.checkpoints):
        parser.error(f"--checkpoints must be best, last or best,last, got {','.join(args.checkpoints)!r}")
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
    args.settings = settings or [()]
    rows = [Row(method, method, (), args.per_k is not None and depends_on_k(method)) for method in args.methods]
    for variant in args.variant:
        head, *overrides = variant.split()
        label, _, method = head.partition("=")
        if not label or method not in LOSSES or any("=" not in override for override in overrides):
            parser.error(f'--variant must look like "LABEL=METHOD KEY=VALUE ...", with a known METHOD, got {variant!r}')
        # A variant that sets its own K (e.g. a multi-label head per K: model.init_args.k=[1.5,2,3]) is one model.
        own_k = any(override.startswith("model.init_args.k=") for override in overrides)
        per_k = args.per_k is not None and depends_on_k(method) and not own_k
        rows.append(Row(label, method, tuple(overrides), per_k))
    args.rows = rows
    if args.from_json is not None and not Path(args.from_json).is_file():
        parser.error(f"--from-json {args.from_json}: no such file (the .json that compare.py writes beside --out)")
    writes = (
        []
        if args.out is None
        else [Path(args.out)] + ([Path(args.out).with_suffix(".json")] if args.from_json is None else [])
    )
    resumable = args.out is not None and args.from_json is None and journal_path(args.out).exists()
    if any(path.exists() for path in writes) and not resumable:
        parser.error(
            f"--out {args.out} exists (or its .json) without the run journal {journal_path(args.out).name} that "
            "compare.py keeps beside its tables: pass a new file name (results are never overwritten)"
        )
    return args


def _jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for setting in args.settings:
        for row in args.rows:
            for k in args.per_k if row.per_k else [None]:
                for seed in range(args.seeds):
                    seeded = tuple(f"{key}={seed}" for key in args.seed_args)
                    jobs.append(Job(_setting_label(setting), row, seed, k, tuple(args.set) + seeded + setting))
    if args.order == "breadth":
        variants = set(args.rows[len(args.methods) :])
        jobs.sort(key=lambda job: (job.seed, job.row in variants))
    return jobs


def journal_path(out: str | Path) -> Path:
    """The run journal beside the tables `out`: one JSON line per finished training run.

    Example:
        >>> journal_path("benchmarks/results/grid.md").as_posix()
        'benchmarks/results/grid.runs.jsonl'
    """
    return Path(out).with_suffix(".runs.jsonl")


def job_key(config: str, job: Job, max_epochs: int, checkpoints: Sequence[str], eval_ks: Sequence[float] | None) -> str:
    """Everything that decides a run's numbers, as one string: a journal's run is reused only for the same key.

    Example:
        >>> job = Job("noise=0.4", Row("softmax", "softmax"), seed=1, overrides=("data.init_args.noise=0.4",))
        >>> key = job_key("configs/fashion_mnist_two_head.yaml", job, 30, ["best"], None)
        >>> key == job_key("configs/fashion_mnist_two_head.yaml", job, 31, ["best"], None)
        False
    """
    return json.dumps(
        {
            "config": config,
            "setting": job.setting,
            "row": asdict(job.row),
            "seed": job.seed,
            "k": job.k,
            "overrides": list(job.overrides),
            "max_epochs": max_epochs,
            "checkpoints": list(checkpoints),
            "eval_ks": None if eval_ks is None else list(eval_ks),
        },
        sort_keys=True,
    )


def read_journal(path: Path) -> dict[str, dict]:
    """The finished runs of a journal, by key; a last line cut short by an interruption is ignored."""
    if not path.exists():
        return {}
    runs = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the study was stopped
        runs[record["key"]] = record
    return runs


def append_journal(path: Path, record: dict) -> None:
    """Add one finished run to the journal, on disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")  # end the line an interrupted write left, so that this run has its own
        handle.write(json.dumps(record).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a file beside `path`, then rename it over `path`: a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _progress(started: float, job: Job, record: dict, checkpoints: Sequence[str]) -> str:
    k = record["k"]
    scores = ", ".join(
        f"{name} (epoch {record['epochs'][name]}) {record['results'][name][f'{SET_PREFIX}avgk_acc@{format_k(k)}']:.4f}"
        for name in checkpoints
    )
    return (
        f"[{time.perf_counter() - started:7.1f} s] {job.setting or 'config'} | {job.row.label} k={format_k(k)} seed "
        f"{job.seed}: test/avgk_acc@{format_k(k)} {scores}; train top-1 {record['train_top1_acc'][-1]:.4f} "
        f"({record['seconds']:.0f} s)"
    )


def _train(
    args: argparse.Namespace, started: float, done: dict[str, dict], finished: Callable[[dict], None]
) -> list[dict]:
    """Run every job that `done` (finished runs by key) lacks, `--jobs` at a time.

    Each new record goes to `finished` as soon as its run ends. Returns the records of every job of the
    plan, in plan order.
    """
    jobs = _jobs(args)
    keys = [job_key(args.config, job, args.max_epochs, args.checkpoints, args.per_k) for job in jobs]
    records = {key: done[key] for key in keys if key in done}
    if records:
        print(f"Resuming: {len(records)} of {len(jobs)} runs are in the journal, {len(jobs) - len(records)} to go.")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def keep(key: str, job: Job, record: dict) -> None:
        record["key"] = key
        records[key] = record
        finished(record)
        print(_progress(started, job, record, args.checkpoints), flush=True)

    with tempfile.TemporaryDirectory(prefix="avgk-compare-") as root:
        # Every job gets a folder of its own: parallel jobs must not pick the same run directory.
        pending = [
            (key, (args.config, job, args.max_epochs, args.checkpoints, str(Path(root) / f"job_{index}"), args.per_k))
            for index, (key, job) in enumerate(zip(keys, jobs))
            if key not in records
        ]
        if args.jobs == 1:
            for key, job_arguments in pending:
                keep(key, job_arguments[1], run_job(*job_arguments))
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
                futures = {
                    pool.submit(_run_job_in_worker, threads, *job_arguments): (key, job_arguments[1])
                    for key, job_arguments in pending
                }
                for future in concurrent.futures.as_completed(futures):
                    keep(*futures[future], future.result())
    return [records[key] for key in keys]


def render(saved: dict[str, Any]) -> str:
    """The Markdown of a saved comparison (the .json beside every output): its header, then the tables."""
    runs = [with_head_chosen_on_validation(run) for run in saved["runs"]]
    settings = saved.get("settings") or list(dict.fromkeys(run["setting"] for run in runs))
    labels = [row["label"] for row in saved["rows"]]
    ks = saved.get("ks") or sorted(
        {run["k"] for run in runs if run["per_k"]} or {k for run in runs for k in run["eval_ks"]}
    )
    checkpoints = saved.get("checkpoints") or list(runs[0]["results"])
    header = saved.get("header") or [f"Command: `{saved['command']}`"]
    return "\n".join(header) + "\n" + report(runs, settings, labels, ks, checkpoints) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    args = _parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    command = "python benchmarks/compare.py " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    if args.from_json is not None:
        saved = json.loads(Path(args.from_json).read_text())
        saved["header"] = [
            *(saved.get("header") or [f"Command: `{saved['command']}`"]),
            "",
            f"Tables rendered from the saved runs by `{command.strip()}`.",
        ]
    else:
        started = time.perf_counter()
        journal = None if args.out is None else journal_path(args.out)
        done = {} if journal is None else read_journal(journal)

        def saved_form(records: Sequence[dict]) -> dict[str, Any]:
            hours = sum(record["seconds"] for record in records) / 3600
            return {
                "command": command.strip(),
                "header": [
                    f"Command: `{command.strip()}`",
                    "",
                    (
                        f"Config `{args.config}`, {args.seeds} seed(s) (also given to "
                        f"{', '.join(args.seed_args) or 'nothing else'}), {args.max_epochs} epoch(s), overrides "
                        f"{args.set or 'none'}, checkpoints {', '.join(args.checkpoints)}; {len(records)} of "
                        f"{len(_jobs(args))} training runs done, {hours:.1f} h of training in all "
                        f"({os.cpu_count()} CPU cores visible, {args.jobs} run(s) at a time)."
                    ),
                ],
                "settings": [_setting_label(setting) for setting in args.settings],
                "ks": args.per_k or sorted({k for record in records for k in record["eval_ks"]}),
                "checkpoints": args.checkpoints,
                "rows": [asdict(row) for row in args.rows],
                "runs": list(records),
            }

        finished_runs: list[dict] = [record for record in done.values()]

        def finished(record: dict) -> None:
            # The journal first (the study's state), then the tables, rewritten from every run finished so far.
            if journal is None:
                return
            append_journal(journal, record)
            finished_runs.append(record)
            planned = {job_key(args.config, job, args.max_epochs, args.checkpoints, args.per_k) for job in _jobs(args)}
            partial = saved_form([run for run in finished_runs if run["key"] in planned])
            write_atomically(Path(args.out), render(partial))
            write_atomically(Path(args.out).with_suffix(".json"), json.dumps(partial))

        saved = saved_form(_train(args, started, done, finished))
    text = render(saved)
    print(text)
    if args.out is not None and args.from_json is not None:
        with open(args.out, "x") as handle:  # never overwrite
            handle.write(text)
    elif args.out is not None:  # the study's own files, checked in _parse_args
        write_atomically(Path(args.out), text)
        write_atomically(Path(args.out).with_suffix(".json"), json.dumps(saved))
    return text


if __name__ == "__main__":
    main()
