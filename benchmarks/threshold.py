"""Calibration cost: average_k_threshold against the reference full sort, on Pl@ntNet-300K's validation shape.

Usage: python benchmarks/threshold.py [--n 31118] [--classes 1081] [--repeats 3]

Prints a Markdown table: for each K, whether the values are identical, the time of the full sort, of
average_k_threshold and of one pass over the tensor (scores.max(), the floor), and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from avgk_lightning.functional import average_k_threshold


def _best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def _sort_rule(scores: torch.Tensor, k: float) -> torch.Tensor:
    values = scores.flatten().sort(descending=True).values
    m = round(scores.shape[0] * k)
    return (values[m - 1] + values[m]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=31118)
    parser.add_argument("--classes", type=int, default=1081)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(args.n, args.classes, generator=generator).mul(3).softmax(dim=1)
    max_time, _ = _best_time(scores.max, args.repeats)
    print(
        f"scores: {args.n} x {args.classes} float32 softmax, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    columns = ["K", "identical", "full sort (s)", "average_k_threshold (s)", "speed-up vs sort"]
    columns += ["one pass max() (s)", "ratio to one pass"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for k in (1, 2, 3, 5, 10):
        sort_time, reference = _best_time(lambda: _sort_rule(scores, k), args.repeats)
        ours_time, ours = _best_time(lambda: average_k_threshold(scores, k), args.repeats)
        print(
            f"| {k} | {bool(ours.item() == reference.item())} | {sort_time:.3f} | {ours_time:.3f} | "
            f"{sort_time / ours_time:.1f}x | {max_time:.4f} | {ours_time / max_time:.1f}x |"
        )


if __name__ == "__main__":
    main()
