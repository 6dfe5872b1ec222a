"""Training throughput of the two-head loss, side by side in one run: against softmax, with 4 K, and without Lightning.

Usage: python benchmarks/overhead.py [--backbone resnet18] [--image-size 32] [--batch-size 128] [--steps 30]
    [--rounds 8] [--ks 1.5,2,3,5]

Four ways to train the same backbone on the same batches of the embedded data at `image-size`:

* ``two_head``: ``TwoHeadModule(k=3)`` through a Lightning Trainer with ``PseudoLabelThreshold`` (the library);
* ``two_head, 4 K``: the same with ``k=[1.5, 2, 3, 5]``, a multi-label head per K (one training for every K);
* ``softmax``: ``TwoHeadModule(method="softmax")``, the baseline;
* ``plain PyTorch``: a loop in the shape of the reference code, no Lightning and no metrics: forward, the
  cross-entropy and the BCE on pseudo-labels from a fixed λ_pl, backward, SGD step, on the same network.

Each trains `steps` optimisation steps after 5 warm-up steps, in `rounds` rounds whose order rotates; img/s
come from each way's median step time over all rounds (medians, and many short rounds, keep a burst of
load on a shared host from deciding the result). The ratios and their targets: two_head / softmax (>= 0.97), 4 K / two_head
(>= 0.97) and two_head / plain PyTorch (>= 0.95), with the range of the per-round ratios. A last table
gives the parameters and memory that each multi-label head adds. Runs on the CPU, and also on CUDA with
bf16-mixed where a GPU is present (skipped otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer

from avgk_lightning import PseudoLabelThreshold, TwoHeadModule
from avgk_lightning.batch import Batch
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.functional import pseudo_labels

WARMUP = 5
WAYS = ("two_head", "two_head, 4 K", "softmax", "plain PyTorch")


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Wall time of each training step after the warm-up ones (synchronised on CUDA)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _synchronize()
        if trainer.global_step > WARMUP:
            self.durations.append(time.perf_counter() - self._start)


def _data(args: argparse.Namespace) -> SyntheticAmbiguityDataModule:
    return SyntheticAmbiguityDataModule(
        image_size=args.image_size, train_size=args.batch_size * (args.steps + WARMUP + 1), batch_size=args.batch_size
    )


def _model(way: str, args: argparse.Namespace, num_classes: int) -> TwoHeadModule:
    method = "softmax" if way == "softmax" else "two_head"
    k = args.ks if way == "two_head, 4 K" else 3.0
    return TwoHeadModule(num_classes=num_classes, backbone=args.backbone, method=method, k=k)


def lightning_step_times(way: str, args: argparse.Namespace, accelerator: str, precision: str) -> list[float]:
    data = _data(args)
    model = _model(way, args, data.num_classes)
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


def plain_step_times(args: argparse.Namespace, accelerator: str, precision: str) -> list[float]:
    """The reference shape: forward, cross-entropy + BCE (summed over classes) on pseudo-labels, backward, step."""
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    data = _data(args)
    data.setup("fit")
    network = _model("two_head", args, data.num_classes).network.to(device).train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    threshold = 0.05  # a fixed λ_pl, as the reference code holds the previous epoch's within an epoch
    durations = []
    for step, raw in enumerate(data.train_dataloader()):
        if step > args.steps + WARMUP:
            break
        # Timed as Lightning's steps are: from the batch on the device and transformed to the end of the update.
        batch = Batch.of(data.on_after_batch_transfer(raw, 0))
        images, target = batch.images.to(device), batch.target.to(device)
        _synchronize()
        started = time.perf_counter()
        with autocast:
            softmax_logits, multilabel_logits = network(images)
            labels = pseudo_labels(softmax_logits.detach().float().softmax(dim=1), target, threshold)
            loss = (
                F.cross_entropy(softmax_logits, target)
                + F.binary_cross_entropy_with_logits(multilabel_logits.float(), labels, reduction="sum")
                / target.shape[0]
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize()
        if step >= WARMUP:
            durations.append(time.perf_counter() - started)
    return durations


def _ratio_cell(speed: dict[str, float], rounds: list[dict[str, float]], numerator: str, denominator: str) -> str:
    per_round = [medians[denominator] / medians[numerator] for medians in rounds]
    return f"{speed[numerator] / speed[denominator]:.3f} ({min(per_round):.3f}-{max(per_round):.3f})"


def head_cost(args: argparse.Namespace) -> str:
    """Parameters and memory that one multi-label head adds (weights, their gradient, SGD momentum)."""
    data = SyntheticAmbiguityDataModule(image_size=args.image_size)
    model = _model("two_head", args, data.num_classes)
    head = model.network.multilabel_head
    parameters = sum(parameter.numel() for parameter in head.parameters())
    total = sum(parameter.numel() for parameter in model.parameters())
    return (
        "| per multi-label head | parameters | share of the model | float32 memory: weights + gradient + momentum "
        "| activations per batch (logits, sigmoid, pseudo-labels) |\n|---|---|---|---|---|\n"
        f"| {args.backbone}, {head.in_features} features, L = {head.out_features} | {parameters:,} | "
        f"{parameters / total:.2%} | {3 * 4 * parameters / 2**20:.2f} MiB | "
        f"{3 * 4 * args.batch_size * head.out_features / 2**10:.0f} KiB at batch {args.batch_size} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--ks", default="1.5,2,3,5", help="the K of the multi-K model")
    args = parser.parse_args()
    args.ks = [float(value) for value in args.ks.split(",")]
    settings = [("cpu", "32-true")]
    if torch.cuda.is_available():
        settings.append(("gpu", "bf16-mixed"))
    else:
        print("No CUDA device: the GPU (bf16-mixed) row is skipped.\n")
    columns = ["device", "precision", "backbone", "batch", *(f"{way} (img/s)" for way in WAYS)]
    columns += ["two_head / softmax (>= 0.97)", "4 K / two_head (>= 0.97)", "two_head / plain PyTorch (>= 0.95)"]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for accelerator, precision in settings:
        measure: dict[str, Callable[[], list[float]]] = {
            way: (lambda way=way, on=accelerator, p=precision: lightning_step_times(way, args, on, p))
            for way in WAYS[:3]
        }
        measure["plain PyTorch"] = lambda on=accelerator, p=precision: plain_step_times(args, on, p)
        steps: dict[str, list[float]] = {way: [] for way in WAYS}
        rounds = []
        for round_index in range(args.rounds):
            order = WAYS[round_index % len(WAYS) :] + WAYS[: round_index % len(WAYS)]
            medians = {}
            for way in order:
                durations = measure[way]()
                steps[way] += durations
                medians[way] = statistics.median(durations)
            rounds.append(medians)
        speed = {way: args.batch_size / statistics.median(times) for way, times in steps.items()}
        device = torch.cuda.get_device_name() if accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
        cells = [device, precision, f"{args.backbone} {args.image_size}x{args.image_size}", str(args.batch_size)]
        cells += [f"{speed[way]:.1f}" for way in WAYS]
        cells += [
            _ratio_cell(speed, rounds, "two_head", "softmax"),
            _ratio_cell(speed, rounds, "two_head, 4 K", "two_head"),
            _ratio_cell(speed, rounds, "two_head", "plain PyTorch"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print("\nRatios: of the median img/s over all rounds (in brackets: the range of the per-round ratios).\n")
    print(head_cost(args))


if __name__ == "__main__":
    main()
