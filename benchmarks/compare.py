"""Compare training methods on one data configuration over several seeds, and write Markdown tables.

Usage:
    python benchmarks/compare.py [--config configs/synthetic_two_head.yaml] [--methods all]
        [--seeds 3] [--max-epochs 3] [--set KEY=VALUE ...] [--sweep KEY=V1,V2,...] [--out FILE.md]

Each (method, seed) runs ``train.py fit`` in this process with ``--model.init_args.method METHOD``,
``--seed_everything SEED`` (seeds 0..S-1: model initialisation and batch order; the data stay those of
the config), ``--trainer.max_epochs`` and the module's default learning-rate schedule (divided by 10
at 50% and 75% of the epochs), then tests the best validation checkpoint with the λ_K calibrated on
validation. `--set` passes any other command-line override (``--set data.init_args.ambiguity=0.8``).

The Markdown file holds, per K: test average-K accuracy, macro average-K accuracy, top-K accuracy and
mean set size as mean ± std over seeds, one row per method (plus the softmax head of two_head models
and the Bayes oracle where the data module knows the posteriors), then the paired difference
two_head - softmax for each seed with its sign. With `--sweep KEY=V1,V2,...` the whole comparison is
repeated for each value of KEY and a summary table gives, per value, each method's average-K
accuracy at the config's K and the paired difference. The command line and the wall time are written
at the top of the file.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avgk_lightning.cli import run_cli
from avgk_lightning.losses import LOSSES
from avgk_lightning.metrics import format_k

ALL_METHODS = ("two_head", "softmax", "an", "an_ls", "wan", "epr", "role", "em")
METRICS = (
    ("avgk_acc", "Test average-K accuracy"),
    ("avgk_acc_macro", "Test macro (mean per class) average-K accuracy"),
    ("topk_acc", "Test top-K accuracy (sets of exactly K)"),
    ("set_size", "Test mean set size"),
)


def train_and_test(config: str, method: str, seed: int, max_epochs: int, overrides: Sequence[str], root: str):
    """Fit one method with one seed, test its best checkpoint; the logged test metrics and the model's K."""
    args = [
        "fit",
        f"--config={config}",
        f"--model.init_args.method={method}",
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
        cli = run_cli(args)
    finally:
        sys.argv = argv
    (results,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    return {name: float(value) for name, value in results.items()}, cli.model


def _rows(runs: dict[str, list[dict[str, float]]]) -> dict[str, tuple[str, list[dict[str, float]]]]:
    """Table rows: label -> (metric prefix, runs); the two-head's softmax head and the oracle get their own."""
    rows = {}
    for method, results in runs.items():
        rows[method] = ("test/", results)
        if method == "two_head":
            rows["two_head (its softmax head)"] = ("test/softmax/", results)
    for results in runs.values():
        if any(name.startswith("test/oracle/") for name in results[0]):
            rows["Bayes oracle"] = ("test/oracle/", results)
            break
    return rows


def _mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def comparison_tables(runs: dict[str, list[dict[str, float]]], ks: Sequence[float]) -> str:
    """Markdown tables of mean ± std over seeds per method and K, then the paired two_head - softmax."""
    lines = []
    rows = _rows(runs)
    header = "| method | " + " | ".join(f"K={format_k(k)}" for k in ks) + " |"
    rule = "|---" * (len(ks) + 1) + "|"
    for metric, title in METRICS:
        lines += ["", f"**{title}** (mean ± std over seeds)", "", header, rule]
        for label, (prefix, results) in rows.items():
            cells = []
            for k in ks:
                values = [
                    result[f"{prefix}{metric}@{format_k(k)}"]
                    for result in results
                    if f"{prefix}{metric}@{format_k(k)}" in result
                ]
                cells.append(_mean_std(values) if len(values) == len(results) else "-")
            if any(cell != "-" for cell in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "two_head" in runs and "softmax" in runs:
        pairs = list(zip(runs["two_head"], runs["softmax"]))
        lines += [
            "",
            (
                "**Paired difference two_head - softmax** (test average-K accuracy, same seed; "
                "wins / ties / losses over seeds, a tie being |difference| < 0.0005)"
            ),
            "",
            "| K | " + " | ".join(f"seed {seed}" for seed in range(len(pairs))) + " | mean | wins / ties / losses |",
            "|---" * (len(pairs) + 3) + "|",
        ]
        for k in ks:
            name = f"test/avgk_acc@{format_k(k)}"
            differences = [two_head[name] - softmax[name] for two_head, softmax in pairs]
            wins = sum(d >= 0.0005 for d in differences)
            losses = sum(d <= -0.0005 for d in differences)
            lines.append(
                f"| {format_k(k)} | "
                + " | ".join(f"{d:+.4f}" for d in differences)
                + f" | {sum(differences) / len(differences):+.4f} | {wins} / {len(differences) - wins - losses} / {losses} |"
            )
    return "\n".join(lines)


def sweep_table(key: str, sweep: dict[str, dict[str, list[dict[str, float]]]], k: float) -> str:
    """Per sweep value: each method's test average-K accuracy at `k`, and the paired two_head - softmax."""
    methods = list(next(iter(sweep.values())))
    name = f"test/avgk_acc@{format_k(k)}"
    paired = "two_head" in methods and "softmax" in methods
    columns = [*methods, "Bayes oracle"] + (["two_head - softmax (mean, wins/ties/losses)"] if paired else [])
    lines = [
        "",
        f"**Sweep over `{key}`: test average-K accuracy at K={format_k(k)}** (mean ± std over seeds)",
        "",
        f"| {key} | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for value, runs in sweep.items():
        cells = [_mean_std([result[name] for result in runs[method]]) for method in methods]
        oracle = [result.get(f"test/oracle/avgk_acc@{format_k(k)}") for result in runs[methods[0]]]
        cells.append("-" if None in oracle else _mean_std(oracle))
        if paired:
            differences = [a[name] - b[name] for a, b in zip(runs["two_head"], runs["softmax"])]
            wins, losses = sum(d >= 0.0005 for d in differences), sum(d <= -0.0005 for d in differences)
            cells.append(
                f"{sum(differences) / len(differences):+.4f} ({wins}/{len(differences) - wins - losses}/{losses})"
            )
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic_two_head.yaml")
    parser.add_argument("--methods", default="all", help=f"comma-separated, or 'all' ({','.join(ALL_METHODS)})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CLI override")
    parser.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...", help="repeat for each value of KEY")
    parser.add_argument("--out", default=None, help="Markdown file to write (never overwritten)")
    args = parser.parse_args(argv)
    args.methods = list(ALL_METHODS) if args.methods == "all" else args.methods.split(",")
    unknown = [method for method in args.methods if method not in LOSSES and "." not in method]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} (argument --methods): choose among {sorted(LOSSES)}")
    if args.seeds < 1 or args.max_epochs < 1:
        parser.error("--seeds and --max-epochs must be >= 1")
    if args.sweep is not None and ("=" not in args.sweep or not args.sweep.split("=", 1)[1]):
        parser.error(f"--sweep must look like KEY=V1,V2,..., got {args.sweep!r}")
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out {args.out} exists: pass a new file name (results are never overwritten)")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = _parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    sweep_key, sweep_values = (
        (None, [None])
        if args.sweep is None
        else (
            args.sweep.split("=", 1)[0],
            args.sweep.split("=", 1)[1].split(","),
        )
    )
    started = time.perf_counter()
    sweep: dict[str, dict[str, list[dict[str, float]]]] = {}
    ks, k = None, None
    with tempfile.TemporaryDirectory(prefix="avgk-compare-") as root:
        for value in sweep_values:
            overrides = list(args.set) + ([] if value is None else [f"{sweep_key}={value}"])
            runs: dict[str, list[dict[str, float]]] = {}
            for method in args.methods:
                for seed in range(args.seeds):
                    run_started = time.perf_counter()
                    results, model = train_and_test(args.config, method, seed, args.max_epochs, overrides, root)
                    ks, k = model.eval_ks, model.k
                    runs.setdefault(method, []).append(results)
                    print(
                        f"[{time.perf_counter() - started:7.1f} s] {sweep_key or ''}{'=' + value if value else ''} "
                        f"{method} seed {seed}: test/avgk_acc@{format_k(k)} "
                        f"{results[f'test/avgk_acc@{format_k(k)}']:.4f} ({time.perf_counter() - run_started:.1f} s)",
                        flush=True,
                    )
            sweep[str(value)] = runs
    elapsed = time.perf_counter() - started
    command = "python benchmarks/compare.py " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    parts = [
        f"Command: `{command.strip()}`",
        "",
        (
            f"Config `{args.config}`, methods {', '.join(args.methods)}, {args.seeds} seed(s), {args.max_epochs} "
            f"epoch(s), overrides {args.set or 'none'}; wall time {elapsed / 60:.1f} min "
            f"({os.cpu_count()} CPU cores visible)."
        ),
    ]
    for value, runs in sweep.items():
        if sweep_key is not None:
            parts += ["", f"### `{sweep_key}={value}`"]
        parts.append(comparison_tables(runs, ks))
    if sweep_key is not None:
        parts.append(sweep_table(sweep_key, sweep, k))
    report = "\n".join(parts) + "\n"
    print(report)
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "x") as handle:  # never overwrite
            handle.write(report)
    return report


if __name__ == "__main__":
    main()
