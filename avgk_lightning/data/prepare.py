"""python -m avgk_lightning.data.prepare SOURCE DESTINATION: a copy of an image folder with its photos resized.

Usage: python -m avgk_lightning.data.prepare SOURCE DESTINATION [--size 256] [--quality 95] [--workers N]

Every image under SOURCE whose shorter side is larger than `size` is written to the same relative path
under DESTINATION with its shorter side resized to `size` (decoded in full, Pillow's bilinear filter, the
size ``T.Resize(size)`` gives; RGB; JPEGs re-encoded at `quality` without chroma subsampling); smaller
images and every other file (the metadata of Pl@ntNet-300K, unreadable images, ...) are copied as they
are. Train on DESTINATION with the same `resize_size`: the resize is then already done, the crops keep
their geometry. Files already in DESTINATION are kept (each is written under a temporary name, then
renamed): an interrupted run resumes where it stopped. SOURCE is only read.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from avgk_lightning.checks import check_integer
from avgk_lightning.data.decode import read_rgb, resized_size
from avgk_lightning.data.folder import IMAGE_EXTENSIONS
from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = ["prepare_resized_copy"]


def _write(source: Path, target: Path, size: int, quality: int) -> str:
    """Write `target` from `source` (resized or copied); what was done: "resized", "copied" or "kept"."""
    if target.exists():
        return "kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    done = "copied"
    if source.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            image = read_rgb(source)
        except InvalidInputError:  # unreadable: copied as it is, for the data module to report or skip
            image = None
        if image is not None and min(image.size) > size:
            image = image.resize(resized_size(image.size, size), Image.BILINEAR)
            file_format = Image.registered_extensions()[source.suffix.lower()]
            image.save(partial, format=file_format, quality=quality, subsampling=0)  # JPEG: full-resolution chroma
            done = "resized"
    if done == "copied":
        shutil.copyfile(source, partial)
    os.replace(partial, target)
    return done


def prepare_resized_copy(
    source: str | os.PathLike, destination: str | os.PathLike, size: int = 256, quality: int = 95, workers: int = 1
) -> Counter:
    """Copy the tree `source` to `destination` with its images' shorter side resized to `size` (see the module).

    Returns how many files were resized, copied as they are, and kept (already in `destination`).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "data" / "train" / "rose").mkdir(parents=True)
        >>> Image.new("RGB", (1200, 900)).save(root / "data" / "train" / "rose" / "a.jpg")
        >>> _ = (root / "data" / "metadata.json").write_text("{}")
        >>> counts = prepare_resized_copy(root / "data", root / "small", size=256)
        >>> sorted(counts.items()), Image.open(root / "small" / "train" / "rose" / "a.jpg").size
        ([('copied', 1), ('resized', 1)], (341, 256))
        >>> prepare_resized_copy(root / "data", root / "small")  # resumes: nothing left to do
        Counter({'kept': 2})
    """
    check_integer("size", size)
    check_integer("workers", workers)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InvalidInputError(f"Expected argument `quality` to be an integer in [1, 100], but got {quality!r}")
    source, destination = Path(source).expanduser().resolve(), Path(destination).expanduser().resolve()
    if not source.is_dir():
        raise MissingFileError(f"Source folder not found: {source} (argument `source`)")
    if destination == source or source in destination.parents or destination in source.parents:
        raise InvalidInputError(
            f"Argument `destination` ({destination}) must lie outside `source` ({source}) and not contain it: "
            "the copy never writes into the data it reads. Pass another folder."
        )
    files = sorted(path for path in source.rglob("*") if path.is_file() and not path.name.endswith(".partial"))
    targets = [destination / path.relative_to(source) for path in files]
    sizes, qualities = [size] * len(files), [quality] * len(files)
    if workers == 1:
        return Counter(map(_write, files, targets, sizes, qualities))
    with ProcessPoolExecutor(workers) as pool:
        return Counter(pool.map(_write, files, targets, sizes, qualities, chunksize=64))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the image folder (or Pl@ntNet-300K archive folder) to copy")
    parser.add_argument("destination", type=Path, help="where the copy goes (outside SOURCE)")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the resized images")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the resized images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    args = parser.parse_args(argv)
    try:
        counts = prepare_resized_copy(args.source, args.destination, args.size, args.quality, args.workers)
    except (InvalidInputError, MissingFileError) as error:
        parser.exit(2, f"error: {error}\n")
    print(
        f"{args.destination}: {counts['resized']} images resized, {counts['copied']} files copied as they are, "
        f"{counts['kept']} already there"
    )


if __name__ == "__main__":
    main()
