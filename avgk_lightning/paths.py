"""Never overwrite what a user has: the first free name in a numbered series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["first_free", "free_path"]


def first_free(candidate: Callable[[int], Path]) -> Path:
    """``candidate(n)`` for the smallest n >= 0 that does not exist yet.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "version_0").mkdir()
        >>> first_free(lambda n: root / f"version_{n}").name
        'version_1'
    """
    number = 0
    while candidate(number).exists():
        number += 1
    return candidate(number)


def free_path(path: str | Path) -> Path:
    """`path` if it does not exist, else ``name-1.ext``, ``name-2.ext``, ...: the first that does not.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "config.yaml"
        >>> _ = path.write_text("")
        >>> free_path(path).name
        'config-1.yaml'
    """
    path = Path(path)
    return first_free(lambda number: path if number == 0 else path.with_name(f"{path.stem}-{number}{path.suffix}"))
