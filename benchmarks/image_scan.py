"""The set-up cost of ``skip_corrupt``: the decode scan of an image folder, per 10,000 images.

Usage: python benchmarks/image_scan.py [--images 400] [--min-side 400] [--max-side 1600] [--dir DIR] [--out FILE.md]

Writes `images` photo-like JPEGs (those of benchmarks/input_pipeline.py: multi-scale noise and shapes,
quality 85-95, longer side uniform in [`min-side`, `max-side`] px; Pl@ntNet-300K's photos are of that
order) into `dir` (a temporary folder by default), makes a few of them unreadable (a truncated download,
an empty file, a text file), then times :func:`avgk_lightning.data.image_scan.scan_images`: a cold scan on
one thread and on every core, and a warm scan (every file unchanged, answered by the cache). For
reference, ``Image.verify()`` (the headers only: what the scan did before, and it misses truncated data).
Prints a Markdown table; `--out` also writes it (never overwritten).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from input_pipeline import load_average, write_photos
from PIL import Image

from avgk_lightning.data.image_scan import SCAN_CACHE, scan_images


def corrupt(paths: list[Path]) -> set[Path]:
    """Break three of `paths` the ways users meet: truncated, empty, not an image."""
    truncated, empty, text = paths[1], paths[2], paths[3]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 2 // 3])
    empty.write_bytes(b"")
    text.write_text("<html>a login page saved as a photo</html>")
    return {truncated, empty, text}


def verify_missed(paths: list[Path]) -> tuple[float, int]:
    """Seconds for ``Image.verify()`` over `paths`, and how many files it let through."""
    started, passed = time.perf_counter(), 0
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
            passed += 1
        except Exception:  # noqa: BLE001, S110 (a reference: whatever verify raises counts as found)
            pass
    return time.perf_counter() - started, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--min-side", type=int, default=400)
    parser.add_argument("--max-side", type=int, default=1600)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out {args.out} exists: pass a new file name (results are never overwritten)")
    root = Path(args.dir or tempfile.mkdtemp(prefix="avgk-scan-"))
    _, size_bytes = write_photos(root, args.images, args.min_side, args.max_side)
    paths = sorted((root / "train" / "plant").glob("*.jpg"))
    broken = corrupt(paths)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for threads in sorted({1, cores}):
        (root / SCAN_CACHE).unlink(missing_ok=True)
        scan = scan_images(paths, root, threads)
        assert set(scan.unreadable) == broken, scan.unreadable
        rows.append((f"decode scan, cold, {threads} thread(s)", scan.seconds, len(broken)))
    started = time.perf_counter()
    scan = scan_images(paths, root)
    rows.append(("decode scan, warm (every file unchanged)", time.perf_counter() - started, len(scan.unreadable)))
    seconds, passed = verify_missed(paths)
    rows.append(("`Image.verify()` (before; headers only)", seconds, len(paths) - passed))
    per = 10_000 / len(paths)
    lines = [
        (
            f"{len(paths)} JPEGs, {size_bytes / len(paths) / 1e3:.0f} kB each on average, longer side "
            f"{args.min_side}-{args.max_side} px; {len(broken)} made unreadable; {cores} core(s), load average "
            f"{load_average()}."
        ),
        "",
        "| scan | seconds per 10,000 images | unreadable found (of 3) |",
        "|---|---|---|",
        *(f"| {name} | {seconds * per:.1f} | {found} |" for name, seconds, found in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
