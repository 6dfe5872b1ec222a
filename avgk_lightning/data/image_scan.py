"""Finding the unreadable images of a data set: a real decode of each, on threads, remembered between runs."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from avgk_lightning.atomic import atomic_path

__all__ = ["DECODE_ERRORS", "SCAN_CACHE", "ImageScan", "decode_error", "scan_images"]

# What Pillow raises for a file it cannot decode (Image.DecompressionBombError is not an OSError).
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
# The scan's memory beside the data: one entry per image, (size, modification time, error or None).
SCAN_CACHE = ".avgk_image_scan.json"
_FORMAT = 1


def decode_error(path: Path) -> str | None:
    """Why the image at `path` cannot be decoded, or None when it can.

    The whole file is decoded: ``Image.verify`` reads only the headers and misses truncated data. A JPEG
    is decoded at 1/8 scale, which still reads all of its compressed data for a fraction of the work.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "photo.jpg"
        >>> Image.new("RGB", (64, 48), "green").save(path)
        >>> decode_error(path) is None
        True
        >>> _ = path.write_bytes(path.read_bytes()[:-10])  # an interrupted download
        >>> decode_error(path)
        'image file is truncated (1 bytes not processed)'
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))
            image.load()
    except DECODE_ERRORS as error:
        return str(error) or type(error).__name__
    return None


@dataclass(frozen=True)
class ImageScan:
    """What :func:`scan_images` found: the unreadable images with their reason, and what the scan cost."""

    unreadable: dict[Path, str]
    decoded: int
    cached: int
    seconds: float
    threads: int
    cache: Path | None

    def summary(self, what: str) -> str:
        """One line for the log: the images decoded, the time per image, the ones remembered from the cache."""
        per_image = 1000 * self.seconds / self.decoded if self.decoded else 0.0
        where = self.cache or "no cache (neither the data folder nor the user cache is writable)"
        return (
            f"skip_corrupt: {what}: decoded {self.decoded} image(s) in {self.seconds:.1f} s ({per_image:.2f} ms each "
            f"on {self.threads} thread(s)), {self.cached} unchanged since the last scan; {len(self.unreadable)} "
            f"unreadable. Scan cache: {where}"
        )


def _user_cache(root: Path) -> Path:
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return home / "avgk_lightning" / f"image_scan-{digest}.json"


def _read_cache(path: Path) -> dict[str, list]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    images = saved.get("images") if isinstance(saved, dict) and saved.get("format") == _FORMAT else None
    return images if isinstance(images, dict) else {}


def _write_cache(path: Path, root: Path, images: dict[str, list]) -> bool:
    """Write the cache whole or not at all (:func:`~avgk_lightning.atomic.atomic_path`); False if not writable."""
    try:
        with atomic_path(path, "image scan cache") as partial:
            partial.write_text(json.dumps({"format": _FORMAT, "root": str(root.resolve()), "images": images}))
    except OSError:  # WriteFailedError included: a read-only data folder, then the user cache
        return False
    return True


def scan_images(paths: Sequence[Path], root: Path, threads: int | None = None) -> ImageScan:
    """Decode every image of `paths` (files under `root`) that changed since the last scan, and report the unreadable.

    The result of each file is remembered in ``root/.avgk_image_scan.json`` (or, when `root` is not
    writable, in the user cache ``~/.cache/avgk_lightning/``) with its size and modification time: the
    next scan decodes only new or changed files.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (64, 48), "green").save(root / "good.jpg")
        >>> _ = (root / "empty.jpg").write_bytes(b"")
        >>> scan = scan_images([root / "good.jpg", root / "empty.jpg"], root)
        >>> [path.name for path in scan.unreadable], scan.decoded
        (['empty.jpg'], 2)
        >>> scan_images([root / "good.jpg", root / "empty.jpg"], root).decoded  # remembered
        0
    """
    threads = threads or len(os.sched_getaffinity(0))
    cache_paths = [root / SCAN_CACHE, _user_cache(root)]
    remembered = next((images for images in map(_read_cache, cache_paths) if images), {})
    results: dict[str, list] = {}
    todo: list[tuple[str, Path, list]] = []
    for path in paths:
        stat = path.stat()
        key, signature = os.path.relpath(path, root), [stat.st_size, stat.st_mtime_ns]
        entry = remembered.get(key)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == signature:
            results[key] = entry
        else:
            todo.append((key, path, signature))
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:  # Pillow decodes with the GIL released
        for (key, _, signature), error in zip(todo, pool.map(decode_error, [path for _, path, _ in todo])):
            results[key] = [*signature, error]
    seconds = time.perf_counter() - started
    cache = None
    if todo or not remembered:
        merged = {**remembered, **results}
        cache = next((path for path in cache_paths if _write_cache(path, root, merged)), None)
    else:
        cache = next((path for path in cache_paths if path.is_file()), None)
    unreadable = {path: results[os.path.relpath(path, root)][2] for path in paths}
    return ImageScan(
        {path: error for path, error in unreadable.items() if error is not None},
        decoded=len(todo),
        cached=len(paths) - len(todo),
        seconds=seconds,
        threads=threads,
        cache=cache,
    )
