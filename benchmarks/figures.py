"""Figures of the committed comparison results: the gain over softmax thresholding, from their JSON alone.

Usage:
    python benchmarks/figures.py noise RESULTS.json OUT.png [--label two_head] [--head set] [--checkpoints best,last]
    python benchmarks/figures.py grid RESULTS.json OUT.png [--checkpoints best,last]
    python benchmarks/figures.py memorisation RESULTS.json OUT.png [--label two_head] [--checkpoint last]

``noise``: the paired difference (a row of the comparison minus softmax thresholding, same seed and data)
of test average-K accuracy against the label-noise rate of each ``noise=...`` setting, one panel per
checkpoint, one line (the mean over seeds) per K and each seed a dot; the same numbers are printed as a
Markdown table (per cell the mean, the seeds' wins / ties / losses and the paired t-interval's verdict).
``grid``: one row per setting, one column per comparison with
softmax and checkpoint, each cell coloured by the mean paired difference and labelled with it, the
wins / ties / losses over seeds and the verdict where the 95% paired t-interval excludes 0 (with several
two-head rows, a last column per checkpoint keeps, per seed, the row and head with the best validation
accuracy: mu chosen on the validation split); the same
numbers are printed as a Markdown table, then per column the count of cells ahead, within ±0.002 and
behind, and of wins and losses. ``memorisation``: per seed of every setting, the paired
difference against how far the softmax baseline fits its noisy training labels (its top-1 accuracy on
them in the last epoch). All read a ``.json`` that ``avgk-compare`` wrote (or its run
journal); nothing is trained. A figure is never written over an existing file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from avgk_lightning.naming import format_k
from avgk_lightning.study import RunRecord, SavedStudy
from avgk_lightning.study.journal import read_journal
from avgk_lightning.study.paired import SET_PREFIX, paired_differences, paired_verdict, signs
from avgk_lightning.study.tables import CHOSEN_PREFIX, HEAD_PREFIXES, SOFTMAX_PREFIX, with_head_chosen_on_validation

ROWS_CHOSEN = "*"  # grid column: every two-head row trained, the row and head validation prefers kept


def load_runs(path: Path) -> tuple[list[RunRecord], list[str]]:
    """The runs of a saved comparison (``.json``) or of a run journal (``.runs.jsonl``), and its settings in order."""
    if path.name.endswith(".runs.jsonl"):
        runs = list(read_journal(path).values())
        settings = list(dict.fromkeys(run.setting for run in runs))
    else:
        saved = SavedStudy.from_dict(json.loads(path.read_text()))
        runs = saved.runs
        settings = saved.settings or list(dict.fromkeys(run.setting for run in runs))
    return [with_head_chosen_on_validation(run) for run in runs], settings


def _noise(setting: str) -> float | None:
    match = re.fullmatch(r"noise=([0-9.]+)", setting)
    return None if match is None else float(match.group(1))


def noise_curves(
    runs: Sequence[RunRecord], settings: Sequence[str], label: str, head: str, checkpoint: str
) -> dict[float, list[tuple[float, list[float]]]]:
    """Per K: (noise rate, paired differences over seeds) of `label`'s `head` minus softmax, by increasing noise.

    Only the settings that are a noise rate alone (``noise=0.4``) count.
    """
    ks = sorted({run.k for run in runs if run.label == label})
    curves: dict[float, list[tuple[float, list[float]]]] = {}
    for k in ks:
        points = []
        for setting in settings:
            noise = _noise(setting)
            differences = paired_differences(
                runs, setting, label, HEAD_PREFIXES[head], "softmax", "avgk_acc", k, checkpoint
            )
            if noise is not None and differences:
                points.append((noise, differences))
        curves[k] = sorted(points)
    return curves


def grid_cells(
    runs: Sequence[RunRecord], settings: Sequence[str], checkpoints: Sequence[str]
) -> tuple[list[str], list[list[list[float] | None]]]:
    """Column titles and, per setting, the paired differences to softmax of every two-head row, head and checkpoint.

    Columns: each non-softmax label's set head, then (for two-head models) the head chosen on validation, at
    the K it was trained for, for each checkpoint. A cell is None where the setting lacks the runs.
    """
    columns: list[tuple[str, str, float, str]] = []
    for run in runs:
        if run.label == "softmax":
            continue
        names = next(iter(run.results.values()))
        heads = ["set"] + (["chosen"] if any(name.startswith(CHOSEN_PREFIX) for name in names) else [])
        for head in heads:
            for checkpoint in checkpoints:
                column = (run.label, head, run.k, checkpoint)
                if column not in columns:
                    columns.append(column)
    labels = list(dict.fromkeys(label for label, *_ in columns))
    if len(labels) > 1:  # the rule that trains every two-head row and keeps the one validation prefers
        for k in dict.fromkeys(k for _, _, k, _ in columns):
            columns += [(ROWS_CHOSEN, "chosen", k, checkpoint) for checkpoint in checkpoints]
    titles = [
        f"{'row and head chosen on val.' if label == ROWS_CHOSEN else label}"
        f"{', head chosen on val.' if head == 'chosen' and label != ROWS_CHOSEN else ''}\nK={format_k(k)}, {checkpoint}"
        for label, head, k, checkpoint in columns
    ]

    cells = [
        [
            rows_chosen_on_validation(runs, setting, labels, k, checkpoint)
            if label == ROWS_CHOSEN
            else paired_differences(runs, setting, label, HEAD_PREFIXES[head], "softmax", "avgk_acc", k, checkpoint)
            for label, head, k, checkpoint in columns
        ]
        for setting in settings
    ]
    return titles, cells


def rows_chosen_on_validation(
    runs: Sequence[RunRecord], setting: str, labels: Sequence[str], k: float, checkpoint: str
) -> list[float] | None:
    """Per seed of `setting`: test average-K accuracy of the row and head with the best validation average-K
    accuracy at the checkpoint's epoch (among both heads of every row of `labels` trained for `k`), minus
    softmax thresholding's; None where a seed lacks a row (the seeds that have them all otherwise).

    The rule that trains each variant (each mu) and keeps what the validation split prefers; the first
    candidate wins a tie (the rows in the order of `labels`, the multi-label head before the softmax head).
    """
    name = format_k(k)
    differences = []
    for seed in sorted({run.seed for run in runs if run.setting == setting}):
        own = {run.label: run for run in runs if run.setting == setting and run.seed == seed and run.k == k}
        reference = next(
            (run for run in runs if run.setting == setting and run.seed == seed and run.label == "softmax"), None
        )
        if reference is None or any(label not in own for label in labels):
            continue
        candidates = []
        for label in labels:
            run = own[label]
            validation = (run.epoch_metrics or [])[run.epochs[checkpoint]]
            for val_prefix, test_prefix in (("val/", SET_PREFIX), ("val/softmax/", SOFTMAX_PREFIX)):
                if f"{val_prefix}avgk_acc@{name}" in validation:
                    test = run.results[checkpoint][f"{test_prefix}avgk_acc@{name}"]
                    candidates.append((validation[f"{val_prefix}avgk_acc@{name}"], test))
        chosen = max(candidates, key=lambda candidate: candidate[0])  # the first of equal ones
        differences.append(chosen[1] - reference.results[checkpoint][f"{SET_PREFIX}avgk_acc@{name}"])
    return differences or None


def _signs(differences: Sequence[float]) -> str:
    return signs(differences).replace(" ", "")  # "2/1/0": narrow enough for a figure's cell


def _cell_text(differences: Sequence[float] | None) -> str:
    """A table cell: mean paired difference, seeds' W/T/L and verdict, bold for a win or a loss; "-" if none."""
    if not differences:
        return "-"
    verdict = paired_verdict(differences)
    text = f"{sum(differences) / len(differences):+.4f} ({_signs(differences)}) {verdict}"
    return f"**{text}**" if verdict in ("win", "loss") else text


def memorisation_points(
    runs: Sequence[RunRecord], settings: Sequence[str], label: str, checkpoint: str
) -> dict[str, list[tuple[float, float]]]:
    """Per setting, per seed: (softmax's top-1 accuracy on its noisy training labels in its last epoch, test
    average-K accuracy of `label` minus softmax's at `checkpoint`, at the K `label` was trained for)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for setting in settings:
        rows = {
            name: {run.seed: run for run in runs if run.setting == setting and run.label == name}
            for name in ("softmax", label)
        }
        for seed in sorted(set(rows["softmax"]) & set(rows[label])):
            softmax, other = rows["softmax"][seed], rows[label][seed]
            name = f"{SET_PREFIX}avgk_acc@{format_k(other.k)}"
            gain = other.results[checkpoint][name] - softmax.results[checkpoint][name]
            points.setdefault(setting, []).append((softmax.train_top1_acc[-1], gain))
    return points


def plot_memorisation(points: dict[str, list[tuple[float, float]]], title: str) -> Any:
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    markers = "os^vD<>pPX*h"
    for index, (setting, values) in enumerate(points.items()):
        axes.plot(
            [x for x, _ in values], [y for _, y in values], markers[index % len(markers)],
            color=f"C{index % 10}", label=setting or "config", alpha=0.8,
        )  # fmt: skip
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("softmax baseline: top-1 on its noisy training labels, last epoch")
    axes.set_ylabel("test average-K accuracy: two-head − softmax")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=6)
    figure.tight_layout()
    return figure


def softmax_summary(runs: Sequence[RunRecord], setting: str, k: float = 2.0) -> str:
    """Softmax thresholding in `setting`: mean test average-K accuracy at K = `k`, best / last checkpoint,
    and its mean top-1 on the noisy training labels in the last epoch ("-" without softmax runs)."""
    own = [run for run in runs if run.setting == setting and run.label == "softmax"]
    if not own:
        return "- | -"
    name = f"{SET_PREFIX}avgk_acc@{format_k(k)}"
    accuracy = {c: sum(run.results[c][name] for run in own) / len(own) for c in ("best", "last")}
    fit = sum(run.train_top1_acc[-1] for run in own) / len(own)
    return f"{accuracy['best']:.4f} / {accuracy['last']:.4f} | {fit:.3f}"


def grid_markdown(
    settings: Sequence[str],
    titles: Sequence[str],
    cells: Sequence[Sequence[list[float] | None]],
    runs: Sequence[RunRecord] | None = None,
) -> str:
    """The heat map's numbers as a Markdown table: per cell the mean paired difference, seeds' W/T/L, verdict
    (bold for a win or a loss); with `runs`, softmax's own accuracy and fit of its training labels first."""
    extra = ["softmax: best / last", "softmax train top-1, last epoch"] if runs is not None else []
    header = "| setting | " + " | ".join([*extra, *(title.replace("\n", ", ") for title in titles)]) + " |"
    lines = [header, "|---" * (len(titles) + len(extra) + 1) + "|"]
    for setting, row in zip(settings, cells):
        texts = [_cell_text(d) for d in row]
        first = [softmax_summary(runs, setting)] if runs is not None else []
        lines.append(f"| {setting or 'config'} | " + " | ".join([*first, *texts]) + " |")
    return "\n".join(lines)


def grid_tally(titles: Sequence[str], cells: Sequence[Sequence[list[float] | None]], band: float = 0.002) -> str:
    """Per column of the grid, over the cells it has: how many are ahead of softmax thresholding (mean paired
    difference >= `band`), within ±`band`, behind; and how many are a win or a loss by the paired t-interval."""
    lines = [
        f"| column | cells | ahead (mean >= +{band}) | within ±{band} | behind (mean <= -{band}) | wins | losses |",
        "|---|---|---|---|---|---|---|",
    ]
    for column, title in enumerate(titles):
        measured = [row[column] for row in cells if row[column]]
        means = [sum(d) / len(d) for d in measured]
        verdicts = [paired_verdict(d) for d in measured]
        ahead, behind = sum(m >= band for m in means), sum(m <= -band for m in means)
        lines.append(
            f"| {title.replace(chr(10), ', ')} | {len(measured)} | {ahead} | {len(measured) - ahead - behind} | "
            f"{behind} | {verdicts.count('win')} | {verdicts.count('loss')} |"
        )
    return "\n".join(lines)


def noise_markdown(
    curves: dict[str, dict[float, list[tuple[float, list[float]]]]], runs: Sequence[RunRecord] | None = None
) -> str:
    """The noise figure's numbers as a Markdown table: one row per noise rate, one column per checkpoint and K
    (mean paired difference, seeds' W/T/L, verdict; bold for a win or a loss); with `runs`, softmax
    thresholding's own accuracy at K = 2 and its fit of the noisy training labels first."""
    columns = [(checkpoint, k) for checkpoint, per_k in curves.items() for k in per_k]
    cells = {
        (checkpoint, k, noise): differences
        for checkpoint, per_k in curves.items()
        for k, points in per_k.items()
        for noise, differences in points
    }
    noises = sorted({noise for _, _, noise in cells})
    extra = ["softmax K=2: best / last", "softmax train top-1, last epoch"] if runs is not None else []
    titles = [f"K={format_k(k)}, {checkpoint}" for checkpoint, k in columns]
    lines = ["| noise | " + " | ".join([*extra, *titles]) + " |", "|---" * (len(titles) + len(extra) + 1) + "|"]
    for noise in noises:
        texts = [_cell_text(cells.get((checkpoint, k, noise))) for checkpoint, k in columns]
        setting = next((run.setting for run in runs or [] if _noise(run.setting) == noise), None)
        first = [softmax_summary(runs, setting)] if runs is not None and setting is not None else []
        lines.append(f"| {noise:g} | " + " | ".join([*first, *texts]) + " |")
    return "\n".join(lines)


def plot_noise(curves: dict[str, dict[float, list[tuple[float, list[float]]]]], title: str) -> Any:
    """One panel per checkpoint (``curves``: checkpoint -> K -> points), a line per K, each seed a dot."""
    figure, panels = plt.subplots(1, len(curves), figsize=(4.2 * len(curves) + 0.6, 4.2), sharey=True, squeeze=False)
    for axes, (checkpoint, per_k) in zip(panels[0], curves.items()):
        for index, (k, points) in enumerate(per_k.items()):
            color = f"C{index}"
            noises = [noise for noise, _ in points]
            axes.plot(noises, [sum(d) / len(d) for _, d in points], "-", color=color, label=f"K = {format_k(k)}")
            for noise, differences in points:
                axes.plot([noise] * len(differences), differences, "o", color=color, alpha=0.45, markersize=4)
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_xlabel("label-noise rate p")
        axes.set_title(f"{checkpoint} checkpoint", fontsize=10)
        axes.legend(fontsize=8)
    panels[0][0].set_ylabel("test average-K accuracy: two-head − softmax")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_grid(settings: Sequence[str], titles: Sequence[str], cells: Sequence[Sequence[list[float] | None]]) -> Any:
    means = [[float("nan") if c is None else sum(c) / len(c) for c in row] for row in cells]
    bound = max([abs(value) for row in means for value in row if not math.isnan(value)] + [0.01])
    figure, axes = plt.subplots(figsize=(2.5 + 0.95 * len(titles), 2.2 + 0.42 * len(settings)))
    image = axes.imshow(means, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for row, row_cells in enumerate(cells):
        for column, differences in enumerate(row_cells):
            if differences:
                verdict = paired_verdict(differences)
                text = f"{means[row][column]:+.3f}\n{_signs(differences)}" + ("" if verdict == "tie" else f" {verdict}")
                axes.text(column, row, text, ha="center", va="center", fontsize=7)
    axes.set_xticks(range(len(titles)), titles, fontsize=7, rotation=35, ha="left", rotation_mode="anchor")
    axes.set_yticks(range(len(settings)), [setting or "config" for setting in settings], fontsize=7)
    axes.xaxis.tick_top()
    figure.colorbar(image, ax=axes, label="minus softmax (mean)")
    figure.tight_layout()
    return figure


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("noise", "grid", "memorisation"))
    parser.add_argument("results", type=Path, help="a .json written by avgk-compare, or its .runs.jsonl journal")
    parser.add_argument("out", type=Path, help="the PNG file to write (never overwritten)")
    parser.add_argument("--label", default="two_head", help="noise, memorisation: the row compared with softmax")
    parser.add_argument("--head", default="set", choices=sorted(HEAD_PREFIXES), help="noise: that row's head")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"), help="memorisation: the checkpoint")
    parser.add_argument("--checkpoints", default="best,last", help="noise, grid: the checkpoints, comma-separated")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"{args.results}: no such file (argument results: a .json or .runs.jsonl of avgk-compare)")
    if args.out.exists():
        parser.error(f"{args.out} exists (argument out): pass a new file name (figures are never overwritten)")
    runs, settings = load_runs(args.results)
    if args.kind == "noise":
        curves = {
            checkpoint: noise_curves(runs, settings, args.label, args.head, checkpoint)
            for checkpoint in args.checkpoints.split(",")
        }
        if not any(points for per_k in curves.values() for points in per_k.values()):
            parser.error(f"{args.results} has no paired {args.label} and softmax runs in noise=... settings")
        head = {"set": "multi-label head", "softmax": "softmax head", "chosen": "head chosen on validation"}
        figure = plot_noise(curves, f"{args.label} ({head[args.head]}) − softmax thresholding, each dot a seed")
        print(noise_markdown(curves, runs))
    elif args.kind == "memorisation":
        points = memorisation_points(runs, settings, args.label, args.checkpoint)
        if not points:
            parser.error(f"{args.results} has no paired {args.label} and softmax runs")
        figure = plot_memorisation(points, f"{args.label} − softmax, {args.checkpoint} checkpoint, each dot a seed")
    else:
        settings = [setting for setting in settings if any(run.setting == setting for run in runs)]
        titles, cells = grid_cells(runs, settings, args.checkpoints.split(","))
        figure = plot_grid(settings, titles, cells)
        print(grid_markdown(settings, titles, cells, runs))
        print()
        print(grid_tally(titles, cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=130)
    plt.close(figure)
    print(f"Wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
