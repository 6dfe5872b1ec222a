"""A study's Markdown: per setting and checkpoint the accuracy tables, the paired differences and the regime.

Per setting and checkpoint: test average-K accuracy, macro (mean per class) average-K accuracy, the average-K
accuracy on the few-sample classes where the data have some, and the mean set size, as mean ± std over seeds;
the paired difference to softmax per seed with its mean and wins / ties / losses, of each variant of
``two_head`` to ``two_head`` and of every row to each reference row named by ``against``; the epochs the
checkpoints come from and the top-1 accuracy on the (noisy) training labels then, which tells whether the
network fits its training labels. A two-head model also gets the rows of its softmax head and of "the head
better on validation". A summary gives the paired differences of every setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from avgk_lightning.naming import format_k
from avgk_lightning.naming import prefix as logged_prefix
from avgk_lightning.study.paired import (
    SET_PREFIX,
    TIE,
    mean,
    mean_std,
    paired_differences,
    paired_verdict,
    runs_at,
    signs,
)
from avgk_lightning.study.plan import depends_on_k
from avgk_lightning.study.records import RunRecord, SavedStudy

__all__ = [
    "CHOSEN_PREFIX",
    "HEAD_PREFIXES",
    "SOFTMAX_PREFIX",
    "parse_against",
    "render",
    "report",
    "with_head_chosen_on_validation",
]

SOFTMAX_PREFIX = logged_prefix("test", "softmax", set_head="set")  # "test/softmax/"
ORACLE_PREFIX = logged_prefix("test", "oracle", set_head="set")  # "test/oracle/"
# Derived rows of a two-head run: the test metrics of whichever head was better on validation.
CHOSEN_PREFIX = "test/chosen/"
HEAD_PREFIXES = {"set": SET_PREFIX, "softmax": SOFTMAX_PREFIX, "chosen": CHOSEN_PREFIX}  # a row's heads
HEAD_NAMES = {"softmax": "its softmax head", "chosen": "the head better on validation"}
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


def with_head_chosen_on_validation(run: RunRecord) -> RunRecord:
    """`run` plus, at each checkpoint, the test metrics of the head with the better validation accuracy.

    For a run with both heads and its per-epoch validation metrics: at the epoch of each checkpoint, the
    validation average-K accuracy at the model's K of the multi-label head and of the softmax head are
    compared, and the test metrics of the better one (the multi-label head on a tie) are added under
    ``test/chosen/``: a rule that needs the validation split alone. A model with a multi-label head per K
    chooses at each of its K (metrics at another K follow the choice at the model's K). Other runs are
    returned unchanged.

    Example:
        >>> results = {"test/avgk_acc@2": 0.90, "test/softmax/avgk_acc@2": 0.93}
        >>> epochs = [{"val/avgk_acc@2": 0.91, "val/softmax/avgk_acc@2": 0.92}]
        >>> run = RunRecord("", "two_head", "two_head", 0, 2.0, True, [2.0], {"last": results}, {"last": 0}, [0.9],
        ...                 epoch_metrics=epochs)
        >>> chosen = with_head_chosen_on_validation(run).results["last"]
        >>> chosen["test/chosen/avgk_acc@2"]
        0.93
    """
    k = format_k(run.k)
    epochs = run.epoch_metrics or []
    if not epochs or f"val/softmax/avgk_acc@{k}" not in epochs[-1]:
        return run
    trained = [format_k(value) for value in run.trained_ks or ()]
    choices = trained if len(trained) > 1 else [k]
    results = {}
    for checkpoint, values in run.results.items():
        validation = epochs[run.epochs[checkpoint]]
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
    return dataclasses.replace(run, results=results)


def _row_title(run: RunRecord, head: str) -> str:
    if run.per_k:
        scope = "one model per K"
    elif len(run.trained_ks or ()) > 1:
        scope = "one model, a multi-label head per K"
    elif not depends_on_k(run.method):
        scope = "one model, at every K"
    else:
        scope = f"one model, k={format_k(run.k)}, at every K"
    return f"{_head_name(run.label, head)} ({scope})"


def _heads(run: RunRecord) -> list[tuple[str, str]]:
    """(head key, metric prefix) of the rows of a run: the set head; for a two-head model its softmax head and
    the head chosen on validation."""
    heads = [("set", SET_PREFIX)]
    names = next(iter(run.results.values()))
    if any(name.startswith(SOFTMAX_PREFIX) for name in names):
        heads.append(("softmax", SOFTMAX_PREFIX))
    if any(name.startswith(CHOSEN_PREFIX) for name in names):
        heads.append(("chosen", CHOSEN_PREFIX))
    return heads


def _first(runs: Sequence[RunRecord], setting: str, label: str) -> RunRecord | None:
    return next((run for run in runs if run.setting == setting and run.label == label), None)


def _metric_rows(runs: Sequence[RunRecord], setting: str, labels: Sequence[str], checkpoint: str):
    """(title, label, head prefix) of every row of the setting; the Bayes oracle last where known."""
    rows = []
    for label in labels:
        first = _first(runs, setting, label)
        if first is not None:
            rows += [(_row_title(first, head), label, prefix) for head, prefix in _heads(first)]
    if any(name.startswith(ORACLE_PREFIX) for run in runs for name in run.results[checkpoint]):
        rows.append(("Bayes oracle", labels[0], ORACLE_PREFIX))
    return rows


def parse_against(spec: str) -> tuple[str, str]:
    """``LABEL`` or ``LABEL:HEAD`` (HEAD: ``set``, ``softmax`` or ``chosen``) as (label, head), the set head by default.

    Example:
        >>> parse_against("two_head:chosen"), parse_against("an")
        (('two_head', 'chosen'), ('an', 'set'))
    """
    label, _, head = spec.partition(":")
    if not label or head not in ("", *HEAD_PREFIXES):
        raise ValueError(f"{spec!r}: expected LABEL or LABEL:HEAD, HEAD one of {', '.join(HEAD_PREFIXES)}")
    return label, head or "set"


def _head_name(label: str, head: str) -> str:
    return label if head == "set" else f"{label}, {HEAD_NAMES[head]}"


def _to_reference(
    runs: Sequence[RunRecord], setting: str, labels: Sequence[str], reference: str, reference_head: str
) -> list[tuple[str, str, str, str, str]]:
    """Every head of every other row of the setting paired against one head of `reference`."""
    comparisons = []
    for label in labels:
        first = None if label == reference else _first(runs, setting, label)
        for head, prefix in _heads(first) if first is not None else []:
            title = f"{_head_name(label, head)} - {_head_name(reference, reference_head)}"
            comparisons.append((title, label, prefix, reference, HEAD_PREFIXES[reference_head]))
    return comparisons


def _comparisons(
    runs: Sequence[RunRecord], setting: str, labels: Sequence[str], against: Sequence[str] = ()
) -> list[tuple[str, str, str, str, str]]:
    """(title, label, head prefix, reference label, reference head prefix) of every paired comparison of a
    setting: every row to softmax, each two_head variant to two_head, then every row to each of `against`."""
    comparisons = []
    if "softmax" in labels:
        comparisons += _to_reference(runs, setting, labels, "softmax", "set")
    if "two_head" in labels:
        for label in labels:
            method = next((run.method for run in runs if run.label == label), None)
            if label != "two_head" and method == "two_head":
                comparisons.append((f"{label} - two_head", label, SET_PREFIX, "two_head", SET_PREFIX))
    for spec in against:
        comparisons += _to_reference(runs, setting, labels, *parse_against(spec))
    return list(dict.fromkeys(comparisons))


def setting_tables(
    runs: Sequence[RunRecord],
    setting: str,
    labels: Sequence[str],
    ks: Sequence[float],
    checkpoint: str,
    against: Sequence[str] = (),
) -> str:
    """The tables of one setting and one checkpoint (see the module docstring)."""
    lines = []
    header = "| model | " + " | ".join(f"K={format_k(k)}" for k in ks) + " |"
    rule = "|---" * (len(ks) + 1) + "|"
    rows = _metric_rows(runs, setting, labels, checkpoint)
    for metric, title in METRICS:
        body = []
        for row_title, label, prefix in rows:
            cells = []
            for k in ks:
                chosen = runs_at(runs, setting, label, k)
                values = [run.value(checkpoint, prefix, metric, k) for run in chosen]
                cells.append(mean_std(values) if chosen and None not in values else "-")
            if any(cell != "-" for cell in cells):
                body.append(f"| {row_title} | " + " | ".join(cells) + " |")
        if body:
            lines += ["", f"**{title}** (mean ± std over seeds)", "", header, rule, *body]
    lines += _paired_tables(runs, setting, labels, ks, checkpoint, against)
    lines += _regime_table(runs, setting, labels, checkpoint)
    return "\n".join(lines)


def _paired_tables(runs, setting, labels, ks, checkpoint, against) -> list[str]:
    lines = []
    for metric, title in PAIRED_METRICS:
        body = []
        for name, label, prefix, reference, reference_prefix in _comparisons(runs, setting, labels, against):
            for k in ks:
                differences = paired_differences(
                    runs, setting, label, prefix, reference, metric, k, checkpoint, reference_prefix
                )
                if differences is None:
                    continue
                seeds = " ".join(f"{d:+.4f}" for d in differences)
                body.append(f"| {name} | {format_k(k)} | {seeds} | {mean(differences):+.4f} | {signs(differences)} |")
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


def _regime_table(runs, setting, labels, checkpoint) -> list[str]:
    body = []
    for label in labels:
        members = sorted(
            (run for run in runs if run.setting == setting and run.label == label),
            key=lambda run: (run.k if run.per_k else 0, run.seed),
        )
        groups: dict[str, list[RunRecord]] = {}
        for run in members:
            groups.setdefault(f"k={format_k(run.k)}" if run.per_k else "all K", []).append(run)
        for group, group_runs in groups.items():
            epochs = [run.epochs[checkpoint] for run in group_runs]
            accuracy = [run.train_top1_acc[epoch] for run, epoch in zip(group_runs, epochs)]
            last = [run.train_top1_acc[-1] for run in group_runs]
            body.append(
                f"| {label} ({group}) | {', '.join(map(str, epochs))} | {mean_std(accuracy)} | {mean_std(last)} |"
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
    runs: Sequence[RunRecord],
    settings: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[float],
    checkpoints: Sequence[str],
    against: Sequence[str] = (),
) -> str:
    """Per setting, K and checkpoint: every paired difference (to softmax, and to each row of `against`) with its
    mean, wins / ties / losses and verdict."""
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
        for name, label, prefix, reference, reference_prefix in _comparisons(runs, setting, labels, against):
            for k in ks:
                cells = []
                for checkpoint in checkpoints:
                    for metric, _ in PAIRED_METRICS:
                        differences = paired_differences(
                            runs, setting, label, prefix, reference, metric, k, checkpoint, reference_prefix
                        )
                        cells.append(
                            "-"
                            if differences is None
                            else f"{mean(differences):+.4f} ({signs(differences)}) {paired_verdict(differences)}"
                        )
                if any(cell != "-" for cell in cells):
                    lines.append(f"| {setting or 'config'} | {name} | {format_k(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(
    runs: Sequence[RunRecord],
    settings: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[float],
    checkpoints: Sequence[str],
    against: Sequence[str] = (),
) -> str:
    """The Markdown body: per setting and checkpoint the tables, then the summary when there are several.

    `against`: more reference rows (``LABEL`` or ``LABEL:HEAD``, see :func:`parse_against`) that every other
    row is paired against, besides softmax.
    """
    parts = []
    for setting in settings:
        for checkpoint in checkpoints:
            parts += ["", f"### {setting or 'config'} — `{checkpoint}` checkpoint"]
            parts.append(setting_tables(runs, setting, labels, ks, checkpoint, against))
    if len(settings) > 1 or len(checkpoints) > 1:
        parts.append(summary_table(runs, settings, labels, ks, checkpoints, against))
    return "\n".join(parts)


def render(saved: SavedStudy) -> str:
    """The Markdown of a saved study: its header, then the tables."""
    runs = [with_head_chosen_on_validation(run) for run in saved.runs]
    settings = saved.settings or list(dict.fromkeys(run.setting for run in runs))
    labels = [row.label for row in saved.rows]
    ks = saved.ks or sorted({run.k for run in runs if run.per_k} or {k for run in runs for k in run.eval_ks})
    checkpoints = saved.checkpoints or list(runs[0].results)
    header = saved.header or [f"Command: `{saved.command}`"]
    return "\n".join(header) + "\n" + report(runs, settings, labels, ks, checkpoints, saved.against or ()) + "\n"
