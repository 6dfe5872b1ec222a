"""Training throughput of the two-head loss over the softmax baseline: same backbone, batch and data.

Usage: python benchmarks/overhead.py [--backbone resnet18] [--image-size 32] [--batch-size 128] [--steps 60] [--rounds 5]

Trains each method for `steps` optimisation steps (after 5 warm-up steps) on the embedded data at
`image-size`, alternating the methods over `rounds` rounds (the order flips every round), and prints
img/s from each method's median step time over all rounds, the ratio two_head / softmax of those
(target >= 0.97) and the range of the per-round ratios. Medians keep a burst of load on a shared host
from deciding the result. The two-head step adds the softmax of the logits, the pseudo-labels, the
BCE term on the second head and the epoch statistic update.
Runs on the CPU, and also on CUDA with bf16-mixed where a GPU is present (skipped otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lightning.pytorch import Callback, Trainer

from avgk_lightning import PseudoLabelThreshold, TwoHeadModule
from avgk_lightning.data import SyntheticAmbiguityDataModule

WARMUP = 5


class StepTimer(Callback):
    """Wall time of each training step after the warm-up ones (synchronised on CUDA)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if trainer.global_step > WARMUP:
            self.durations.append(time.perf_counter() - self._start)


def step_times(method: str, args: argparse.Namespace, accelerator: str, precision: str) -> list[float]:
    data = SyntheticAmbiguityDataModule(
        image_size=args.image_size, train_size=args.batch_size * (args.steps + WARMUP + 1), batch_size=args.batch_size
    )
    model = TwoHeadModule(num_classes=data.num_classes, backbone=args.backbone, method=method, k=3)
    timer = StepTimer()
    trainer = Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=args.steps + WARMUP + 1,
        limit_val_batches=0,
        callbacks=[PseudoLabelThreshold(), timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return timer.durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = [("cpu", "32-true")]
    if torch.cuda.is_available():
        settings.append(("gpu", "bf16-mixed"))
    else:
        print("No CUDA device: the GPU (bf16-mixed) row is skipped.")
    columns = ["device", "precision", "backbone", "batch", "two_head (img/s)", "softmax (img/s)", "ratio"]
    columns += ["per-round ratios", "target"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for accelerator, precision in settings:
        steps: dict[str, list[float]] = {"two_head": [], "softmax": []}
        round_ratios = []
        for round_index in range(args.rounds):
            order = ["two_head", "softmax"] if round_index % 2 == 0 else ["softmax", "two_head"]
            medians = {}
            for method in order:
                durations = step_times(method, args, accelerator, precision)
                steps[method] += durations
                medians[method] = statistics.median(durations)
            round_ratios.append(medians["softmax"] / medians["two_head"])
        speed = {method: args.batch_size / statistics.median(times) for method, times in steps.items()}
        device = torch.cuda.get_device_name() if accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
        print(
            f"| {device} | {precision} | {args.backbone} {args.image_size}x{args.image_size} | {args.batch_size} | "
            f"{speed['two_head']:.1f} | {speed['softmax']:.1f} | {speed['two_head'] / speed['softmax']:.3f} | "
            f"{min(round_ratios):.3f}-{max(round_ratios):.3f} | >= 0.97 |"
        )


if __name__ == "__main__":
    main()
