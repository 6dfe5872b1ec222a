"""A study's files: the run journal (one JSON line per finished run) and the tables and runs rewritten beside it.

The journal is the study's state: a run is appended and synced to disk before the next one starts, so an
interrupted study resumes from it; the tables (``FILE.md``) and the saved study (``FILE.json``) are
rewritten from it, atomically, after every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from avgk_lightning.atomic import atomic_path
from avgk_lightning.study.records import RunRecord

__all__ = ["append_journal", "journal_path", "read_journal", "write_atomically"]


def journal_path(out: str | os.PathLike) -> Path:
    """The run journal beside the tables `out`.

    Example:
        >>> journal_path("benchmarks/results/grid.md").as_posix()
        'benchmarks/results/grid.runs.jsonl'
    """
    return Path(out).with_suffix(".runs.jsonl")


def read_journal(path: Path) -> dict[str, RunRecord]:
    """The finished runs of a journal, by key; a last line cut short by an interruption is ignored.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "study.runs.jsonl"
        >>> record = RunRecord("", "softmax", "softmax", 0, 2.0, False, [2.0], {"best": {}}, {"best": 0}, [0.5], key="a")
        >>> append_journal(path, record)
        >>> with open(path, "a") as handle:
        ...     _ = handle.write('{"key": "b", "setting')  # what a kill in the middle of a write leaves
        >>> list(read_journal(path)) == ["a"] and read_journal(path)["a"] == record
        True
    """
    if not path.exists():
        return {}
    runs = {}
    for line in path.read_text().splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the study was stopped
        runs[data["key"]] = RunRecord.from_dict(data)
    return runs


def append_journal(path: Path, record: RunRecord) -> None:
    """Add one finished run to the journal, on disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")  # end the line an interrupted write left, so that this run has its own
        handle.write(json.dumps(record.to_dict()).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` at once: a reader sees the old or the new file, never a part."""
    with atomic_path(path, "study file") as partial:
        partial.write_text(text)
