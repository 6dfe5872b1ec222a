"""Training throughput of the CIFAR-100 backbones: DenseNet-BC-40-40 beside ResNet-18 with and without the 3x3 stem.

Usage: python benchmarks/backbone_throughput.py [--batch-size 64] [--num-classes 100] [--threads 2] [--warmup 2]
                                                [--steps 5]

Each backbone (avgk_lightning.models.create_backbone, as the configs build it) gets a `num-classes` linear
classifier and trains on random 32x32 float32 images: cross-entropy, backward pass and one step of the
recipes' SGD (Nesterov momentum 0.9, weight decay 1e-4). `warmup` batches are run first and not timed;
images/s and ms per batch come from the median of the `steps` timed batches. Runs on the CPU with
`threads` threads; prints a Markdown table and the load average (from /proc/loadavg) before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from avgk_lightning.models import create_backbone

# (label, timm name, small_input_stem): the CIFAR-100 recipes' backbones and timm's plain ResNet-18.
BACKBONES = (
    ("densenet_bc_40_40", "densenet_bc_40_40", False),
    ("resnet18, small_input_stem", "resnet18", True),
    ("resnet18", "resnet18", False),
)


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, or a note where /proc/loadavg does not exist."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown (no /proc/loadavg)"


def batch_times(name: str, small_input_stem: bool, args: argparse.Namespace) -> tuple[int, list[float]]:
    """The parameter count (classifier included) and the wall time of each timed training batch."""
    torch.manual_seed(0)
    backbone, width = create_backbone(name, small_input_stem=small_input_stem)
    model = nn.Sequential(backbone, nn.Linear(width, args.num_classes)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    images = torch.randn(args.batch_size, 3, 32, 32)
    target = torch.randint(args.num_classes, (args.batch_size,))
    durations = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), target).backward()
        optimizer.step()
        if step >= args.warmup:
            durations.append(time.perf_counter() - start)
    return sum(p.numel() for p in model.parameters()), durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, float32, batch {args.batch_size}, "
        f"32x32 inputs, {args.num_classes} classes; median of {args.steps} timed batches after {args.warmup} "
        f"warm-up ones. Load average before: {load_average()}.\n"
    )
    print("| backbone | parameters | images/s | ms per batch |")
    print("|---|---|---|---|")
    for label, name, small_input_stem in BACKBONES:
        parameters, durations = batch_times(name, small_input_stem, args)
        median = statistics.median(durations)
        print(f"| {label} | {parameters / 1e6:.2f} M | {args.batch_size / median:.1f} | {1000 * median:.0f} |")
    print(f"\nLoad average after: {load_average()}.")


if __name__ == "__main__":
    main()
