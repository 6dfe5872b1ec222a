"""The two thresholds of the library at Pl@ntNet-300K scale, each printed as a Markdown table.

Usage: python benchmarks/threshold.py [--part calibration|statistic|both] [--repeats 3]

1. Calibration: average_k_threshold on 31,118 x 1,081 softmax scores (the validation split's shape)
   against the reference protocol's full sort of all values: identical value?, time ratio (target:
   at least 10x faster than the sort) and ratio to one pass over the tensor (scores.max(), the floor).
2. Training statistic: 243,916 x 1,081 softmax scores (one training epoch) streamed in batches of 32
   through PseudoLabelThreshold's histogram: per-batch update cost as a ratio to the softmax of that
   batch (target <= 1.0), its memory (target: independent of N, under 16 MB), the all-reduce payload
   per epoch, and, for K in {2, 3, 5, 10}, the error of the realised mean pseudo-label set size
   against K when the epoch threshold is applied to the same scores (target <= 0.5%).
"""

from __future__ import annotations

import argparse
import time

import torch

from avgk_lightning.callbacks import NonTrueScoreHistogram
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


def calibration(n: int, classes: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(n, classes, generator=generator).mul(3).softmax(dim=1)
    max_time, _ = _best_time(scores.max, repeats)
    print(f"\nCalibration: {n} x {classes} float32 softmax scores, best of {repeats}")
    columns = ["K", "identical", "full sort (s)", "average_k_threshold (s)", "speed-up vs sort"]
    columns += ["one pass max() (s)", "ratio to one pass"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for k in (1, 2, 3, 5, 10):
        sort_time, reference = _best_time(lambda k=k: _sort_rule(scores, k), repeats)
        ours_time, ours = _best_time(lambda k=k: average_k_threshold(scores, k), repeats)
        print(
            f"| {k} | {bool(ours.item() == reference.item())} | {sort_time:.3f} | {ours_time:.3f} | "
            f"{sort_time / ours_time:.1f}x | {max_time:.4f} | {ours_time / max_time:.1f}x |"
        )


def _epoch_batches(n: int, classes: int, batch: int):
    """A deterministic epoch of softmax scores: the true class gets a boost, as in a trained network."""
    generator = torch.Generator().manual_seed(1)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        target = torch.randint(classes, (size,), generator=generator)
        logits = torch.randn(size, classes, generator=generator).mul(2.0)
        logits[torch.arange(size), target] += 6.0
        yield logits, target


def statistic(n: int, classes: int, batch: int) -> None:
    histogram = NonTrueScoreHistogram()
    softmax_time = update_time = 0.0
    for logits, target in _epoch_batches(n, classes, batch):
        start = time.perf_counter()
        probs = logits.softmax(dim=1)
        middle = time.perf_counter()
        histogram.update(probs, target)
        update_time += time.perf_counter() - middle
        softmax_time += middle - start
    batches = -(-n // batch)
    ks = (2, 3, 5, 10)
    thresholds = {k: histogram.threshold(round((k - 1) * n)) for k in ks}
    above = dict.fromkeys(ks, 0)
    for logits, target in _epoch_batches(n, classes, batch):  # the same scores again
        non_true = logits.softmax(dim=1)
        non_true[torch.arange(len(target)), target] = -1.0
        for k in ks:
            above[k] += int((non_true >= thresholds[k]).sum())
    payload = histogram.counts.nbytes + 4 * 8  # the counts travel with 4 totals (int64) in one all-reduce
    print(f"\nTraining statistic: {n} x {classes} softmax scores in {batches} batches of {batch}")
    print("| quantity | value | target |")
    print("|---|---|---|")
    print(f"| softmax per batch (us) | {softmax_time / batches * 1e6:.1f} | |")
    print(f"| statistic update per batch (us) | {update_time / batches * 1e6:.1f} | |")
    print(f"| update / softmax | {update_time / softmax_time:.2f} | <= 1.0 |")
    print(f"| statistic memory (bytes, any N) | {histogram.nbytes:,} | < 16 MB |")
    print(f"| all-reduce payload per epoch (bytes) | {payload:,} | one all-reduce |")
    for k in ks:
        realised = 1 + above[k] / n
        print(
            f"| K={k}: realised mean pseudo-label set size (threshold {thresholds[k]:.6g}) | {realised:.5f} "
            f"(error {abs(realised - k) / k * 100:.4f}%) | <= 0.5% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["calibration", "statistic", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.part in ("calibration", "both"):
        calibration(31118, 1081, args.repeats)
    if args.part in ("statistic", "both"):
        statistic(243916, 1081, 32)


if __name__ == "__main__":
    main()
