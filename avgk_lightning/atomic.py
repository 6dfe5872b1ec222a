"""Files written whole or not at all: a partial file beside the destination, then one atomic rename.

A full disk, a quota, or a kill while a file is written leaves the previous file of that name as it was
and no half-written file under it. Everything avgk-lightning writes goes through :func:`atomic_path`:
checkpoints (:class:`AtomicCheckpointIO`), predictions, exports, plots and label-noise records.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from avgk_lightning.errors import WriteFailedError, find_cause

__all__ = ["AtomicCheckpointIO", "atomic_path"]


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, what: str = "file", overwrite: bool = True) -> Iterator[Path]:
    """A partial path beside `destination` to write; it becomes `destination` when the block ends.

    On an ``OSError`` (e.g. no space left on device) the partial file is removed, `destination` keeps
    its previous content, and :class:`~avgk_lightning.errors.WriteFailedError` names it. With
    ``overwrite=False`` an existing `destination` is never replaced (the rename refuses atomically).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "record.json"
        >>> with atomic_path(path) as partial:
        ...     _ = partial.write_text("{}")
        >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
        ('{}', ['record.json'])
    """
    destination = Path(destination)
    partial = destination.with_name(f".{destination.stem}.partial-{os.getpid()}{destination.suffix}")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        _fsync(partial)
        if overwrite:
            os.replace(partial, destination)
        else:
            os.link(partial, destination)  # fails if destination exists
            partial.unlink()
    except FileExistsError as error:
        partial.unlink(missing_ok=True)
        raise WriteFailedError(f"{destination} exists: it is not overwritten. Pass another file name.") from error
    except BaseException as error:
        partial.unlink(missing_ok=True)
        cause = find_cause(error, OSError)  # torch.save re-raises a failed write as a RuntimeError
        if cause is None or isinstance(error, WriteFailedError):
            raise
        raise WriteFailedError(
            f"Cannot write {what} {destination}: {cause.strerror or cause}. Nothing was replaced: the previous "
            f"{destination.name} (if any) is intact. Free some space (or pick another folder) and run again."
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local checkpoints are written beside their name, then renamed over it.

    Lightning's own save goes through a temporary file in the system's temp folder that is then copied
    over the destination: across file systems that copy is not atomic, and a full disk during it
    destroys the previous checkpoint of that name. Here a failed save leaves the previous ``best.ckpt`` /
    ``last.ckpt`` whole and ends the run with one line naming the file. Remote paths (``s3://``, ...)
    keep Lightning's save. ``train.py`` uses it; pass it to your own Trainer as a plugin.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(plugins=[AtomicCheckpointIO()], logger=False)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path, "checkpoint") as partial, open(partial, "wb") as handle:
            torch.save(checkpoint, handle)  # a Python file: a failed write keeps its OSError
