"""Images/s per core of the image-folder input pipeline (ImageFolderDataModule, PlantNet300KDataModule).

Usage: python benchmarks/input_pipeline.py [--images 160] [--min-side 400] [--max-side 1600] [--batch-size 32]
                                           [--workers 1 2] [--repeats 3] [--dir DIR] [--out FILE.md]

Writes `images` photo-like JPEGs (multi-scale smooth noise, gradients and blurred shapes; quality 85-95;
longer side drawn uniformly in [`min-side`, `max-side`] px, aspect 4:3, 3:4, 16:9 or 1:1) into `dir`
(a temporary folder by default; reused when it already holds them), then, for the transforms before the
input-pipeline switches and each faster variant (the data module's `decode` and `uint8_batches`), measures
on the reference transforms (Resize 256 + RandomCrop 224 for training, Resize 256 + CenterCrop 224 for
evaluation):

* CPU time per image: every image through the dataset in this process, one torch thread, `time.process_time`,
  the fastest of `repeats` passes; images/s per core is its inverse;
* images/s through the DataLoader with 1 and 2 worker processes (wall clock, worker start-up included);
* the evaluation crops' absolute difference from those of the transforms before, in 0-255 units (mean,
  99.9th percentile and max over every pixel of every image);
* where the CPU time of a training image goes: full decode, draft decode, decode at 1/8 scale (the
  entropy-decoding floor that no Pillow decode avoids) and the whole pipeline, before and now.

uint8 variants leave the conversion and normalisation to the device (`on_after_batch_transfer`), which is
not timed here. The last variant reads a copy of the photos resized once (shorter side 256,
`python -m avgk_lightning.data.prepare`, written next to `dir` as `<dir>_256`). Prints a Markdown table
and the load average; `--out` also writes it (never overwritten).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms as T

from avgk_lightning.data import ImageFolderDataModule
from avgk_lightning.data.decode import ResizeCrop, read_rgb
from avgk_lightning.data.folder import IMAGENET_MEAN, IMAGENET_STD
from avgk_lightning.data.prepare import prepare_resized_copy
from avgk_lightning.paths import free_path

# (label, decode, uint8_batches, prepared); decode None: the transforms before the switches (T.Resize, then
# T.RandomCrop or T.CenterCrop, T.ToTensor, T.Normalize, every photo decoded in full), which the others are
# compared with; prepared: read from a copy resized once by avgk_lightning.data.prepare (shorter side 256).
VARIANTS = (
    ("before: PIL full decode, Resize + crop, float32", None, False, False),
    ("PIL full decode, one-resample crop, float32", "pil", False, False),
    ("PIL full decode, one-resample crop, uint8 batches", "pil", True, False),
    ("draft decode, one-resample crop, float32", "draft", False, False),
    ("draft decode, one-resample crop, uint8 batches (default)", "draft", True, False),
    ("default, on a copy prepared with shorter side 256", "draft", True, True),
)
ASPECTS = ((4, 3), (3, 4), (16, 9), (1, 1))


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, or a note where /proc/loadavg does not exist."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown (no /proc/loadavg)"


def photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: 1/f multi-scale noise over a colour gradient, with blurred ellipses."""
    canvas = np.zeros((height, width, 3), np.float32)
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * rng.uniform(-80, 80, 3)
    canvas += rng.uniform(60, 190, 3) + ramp + np.linspace(0, 1, height, dtype=np.float32)[:, None, None] * 40
    for octave in range(1, 8):
        cells = 2**octave
        grid = rng.normal(0, 1, (cells, max(2, cells * width // height), 3)).astype(np.float32)
        layer = [np.asarray(Image.fromarray(grid[..., c]).resize((width, height), Image.BICUBIC)) for c in range(3)]
        canvas += np.stack(layer, -1) * (90 / octave)
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    shapes = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height))
    for _ in range(rng.integers(3, 9)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.03, 0.25) * width, rng.uniform(0.03, 0.25) * height
        box = (x - rx, y - ry, x + rx, y + ry)
        ImageDraw.Draw(shapes).ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        ImageDraw.Draw(mask).ellipse(box, fill=int(rng.integers(120, 256)))
    radius = max(width, height) / 400
    return Image.composite(
        shapes.filter(ImageFilter.GaussianBlur(radius)), image, mask.filter(ImageFilter.GaussianBlur(radius))
    )


def link_evaluation_splits(root: Path) -> None:
    """root/val and root/test as links to root/train: every split holds the same photos."""
    for split in ("val", "test"):
        if not (root / split).exists():
            (root / split).symlink_to(root / "train", target_is_directory=True)


def prepared_copy(root: Path) -> Path:
    """The photos of `root` resized once to a shorter side of 256 (avgk_lightning.data.prepare), next to it."""
    copy = root.with_name(f"{root.name}_256")
    prepare_resized_copy(root / "train", copy / "train", size=256, workers=os.cpu_count() or 1)
    link_evaluation_splits(copy)
    return copy


def write_photos(
    root: Path, count: int, min_side: int, max_side: int, seed: int = 0
) -> tuple[list[tuple[int, int]], int]:
    """`count` JPEGs in root/{train,val,test}/plant/ (the same files in each split); their sizes and total bytes."""
    rng = np.random.default_rng(seed)
    sizes = []
    for index in range(count):
        longer = int(rng.integers(min_side, max_side + 1))
        across, down = ASPECTS[index % len(ASPECTS)]
        size = (longer, longer * down // across) if across >= down else (longer * across // down, longer)
        sizes.append(size)
        path = root / "train" / "plant" / f"{index:05d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(*size, rng).save(path, quality=int(rng.integers(85, 96)))
    link_evaluation_splits(root)
    return sizes, sum(path.stat().st_size for path in (root / "train" / "plant").glob("*.jpg"))


def transforms_before() -> tuple[T.Compose, T.Compose]:
    """The reference transforms as they were before the input-pipeline switches (training, evaluation)."""
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return (
        T.Compose([T.Resize(256), T.RandomCrop(224), *normalize]),
        T.Compose([T.Resize(256), T.CenterCrop(224), *normalize]),
    )


def cpu_seconds_per_image(dataset: torch.utils.data.Dataset, repeats: int) -> float:
    """Process CPU time per item of `dataset`, read in this process on one thread: the best of `repeats` passes."""
    passes = []
    for _ in range(repeats):
        start = time.process_time()
        for index in range(len(dataset)):
            dataset[index]
        passes.append((time.process_time() - start) / len(dataset))
    return min(passes)


def stage_milliseconds(paths: list[Path], repeats: int) -> list[tuple[str, float]]:
    """CPU ms per training image of each stage, and of the whole pipeline before and now (one thread, best pass).

    Decoding at 1/8 scale is the floor of any Pillow JPEG decode: the entropy (Huffman) decoding that every
    scale pays, with the least inverse-DCT work.
    """
    train_before = transforms_before()[0]
    train_now = T.Compose([ResizeCrop(256, 224, random=True), T.PILToTensor()])

    def full(path: Path) -> None:
        read_rgb(path)

    def eighth(path: Path) -> None:
        with Image.open(path) as image:
            image.draft("RGB", (image.width // 8, image.height // 8))
            image.convert("RGB")

    stages = (
        ("before: full decode, Resize + RandomCrop, float32", lambda path: train_before(read_rgb(path))),
        ("full decode alone", full),
        ("draft decode alone (shorter side >= 256)", lambda path: read_rgb(path, 256)),
        ("decode at 1/8 scale alone (the entropy-decoding floor)", eighth),
        ("default: draft decode, one-resample crop, uint8", lambda path: train_now(read_rgb(path, 256))),
    )
    rows = []
    for label, stage in stages:
        passes = []
        for _ in range(repeats):
            start = time.process_time()
            for path in paths:
                stage(path)
            passes.append((time.process_time() - start) / len(paths))
        rows.append((label, 1000 * min(passes)))
    return rows


def loader_images_per_second(data: ImageFolderDataModule, train: bool, workers: int) -> float:
    """Images/s through the split's DataLoader with `workers` worker processes (start-up included)."""
    data.num_workers, data.persistent_workers = workers, False
    loader = data.train_dataloader() if train else data.val_dataloader()
    start = time.perf_counter()
    count = sum(len(batch.images) for batch in loader)
    return count / (time.perf_counter() - start)


def eval_crops_255(data: ImageFolderDataModule) -> torch.Tensor:
    """Every evaluation crop as float 0-255 values (normalisation undone for float32 pipelines)."""
    crops = torch.stack([data.val_dataset[index][0] for index in range(len(data.val_dataset))])
    if crops.dtype == torch.uint8:
        return crops.float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (crops * std + mean) * 255


def measure(root: Path, args: argparse.Namespace) -> list[dict]:
    rows, reference = [], None
    for label, decode, uint8_batches, prepared in VARIANTS:
        data = ImageFolderDataModule(
            prepared_copy(root) if prepared else root,
            decode=decode or "pil",
            uint8_batches=uint8_batches,
            batch_size=args.batch_size,
            pin_memory=False,
        )
        if decode is None:
            data.train_transform, data.eval_transform = transforms_before()
        data.setup("fit")
        row = {"label": label, "decode": decode, "uint8_batches": uint8_batches}
        for split, dataset, train in (("train", data.train_dataset, True), ("eval", data.val_dataset, False)):
            row[f"{split}_cpu"] = cpu_seconds_per_image(dataset, args.repeats)
            for workers in args.workers:
                row[f"{split}_loader_{workers}"] = loader_images_per_second(data, train, workers)
        crops = eval_crops_255(data)
        reference = crops if reference is None else reference
        difference = (crops - reference).abs()
        row["mean_diff"], row["max_diff"] = float(difference.mean()), float(difference.max())
        row["p999_diff"] = float(difference.flatten().kthvalue(int(0.999 * difference.numel())).values)
        rows.append(row)
        print(f"measured: {label}", flush=True)
    return rows


def table(rows: list[dict], sizes: list[tuple[int, int]], size_bytes: int, args: argparse.Namespace) -> str:
    longer = sorted(max(size) for size in sizes)
    shorter = sorted(min(size) for size in sizes)
    worker_columns = [
        f"{split} images/s, {w} worker{'s' if w > 1 else ''}" for split in ("train", "eval") for w in args.workers
    ]
    lines = [
        (
            f"{len(sizes)} JPEGs (quality 85-95, {size_bytes / len(sizes) / 1e3:.0f} KB on average, "
            f"{8 * size_bytes / sum(w * h for w, h in sizes):.2f} bits per pixel), longer side {longer[0]}-{longer[-1]} px (median "
            f"{longer[len(longer) // 2]}), shorter side {shorter[0]}-{shorter[-1]} px (median {shorter[len(shorter) // 2]}); "
            f"Resize 256, crops 224, batch {args.batch_size}; {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"Pillow {Image.__version__}."
        ),
        (
            f"Per core: 1 / (process CPU time per image, one thread, best of {args.repeats} passes). Every variant keeps the crop geometry (shorter side "
            "to 256 as T.Resize rounds, the same crop offsets) and Pillow's bilinear filter. Pixel difference: "
            "evaluation crops against the transforms before, 0-255 units, mean / 99.9th percentile / max."
        ),
        "",
        "| pipeline | train images/s per core | speed-up | eval images/s per core | speed-up | "
        + " | ".join(worker_columns)
        + " | eval crop difference |",
        "|" + "---|" * (6 + len(worker_columns)),
    ]
    base = rows[0]
    for row in rows:
        cells = [row["label"]]
        for split in ("train", "eval"):
            cells += [f"{1 / row[f'{split}_cpu']:.0f}", f"{base[f'{split}_cpu'] / row[f'{split}_cpu']:.2f}x"]
        cells += [f"{row[f'{split}_loader_{w}']:.0f}" for split in ("train", "eval") for w in args.workers]
        cells.append(f"{row['mean_diff']:.2f} / {row['p999_diff']:.0f} / {row['max_diff']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--min-side", type=int, default=400)
    parser.add_argument("--max-side", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="passes timed per variant; the fastest counts")
    parser.add_argument("--dir", type=Path, default=None, help="folder of the generated photos (kept)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.dir or Path(tempfile.mkdtemp(prefix="input_pipeline_"))
    sizes, size_bytes = write_photos(root, args.images, args.min_side, args.max_side)
    before = load_average()
    rows = measure(root, args)
    stages = stage_milliseconds(sorted((root / "train" / "plant").glob("*.jpg")), args.repeats)
    breakdown = "\n".join(
        ["| training image, one thread | CPU ms |", "|---|---|", *(f"| {label} | {ms:.2f} |" for label, ms in stages)]
    )
    text = (
        f"{table(rows, sizes, size_bytes, args)}\n\nWhere the time goes:\n\n{breakdown}\n\n"
        f"Load average before / after: {before} / {load_average()}\n"
    )
    print(text)
    if args.out is not None:
        out = free_path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:])
        out.write_text(f"`{command}`\n\n{text}")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
