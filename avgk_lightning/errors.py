"""Errors in what a user wrote (an argument, a file, a data set): the message says what to fix.

They subclass ValueError (and FileNotFoundError where a path is missing, ImportError where an optional
package is) so that Python callers can catch them as usual; ``train.py`` prints their message alone and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "InvalidInputError",
    "MissingDependencyError",
    "MissingFileError",
    "NonFiniteLossError",
    "WriteFailedError",
    "find_input_error",
]


class InvalidInputError(ValueError):
    """An argument, a file or a data set that cannot be used as given."""


class MissingFileError(InvalidInputError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""


class MissingDependencyError(InvalidInputError, ImportError):
    """An optional package that the asked feature needs is not installed: the message names the pip extra."""


class NonFiniteLossError(InvalidInputError, FloatingPointError):
    """The training loss became NaN or infinite: training stops before the update that would spread it."""


class WriteFailedError(InvalidInputError, OSError):
    """A file could not be written (a full disk, a quota, no permission): what was there before is intact."""


def find_input_error(error: BaseException) -> InvalidInputError | None:
    """The InvalidInputError behind `error` (jsonargparse and Lightning re-raise it wrapped), if any.

    Example:
        >>> try:
        ...     try:
        ...         raise InvalidInputError("bad k")
        ...     except InvalidInputError as inner:
        ...         raise ValueError("Does not validate") from inner
        ... except ValueError as outer:
        ...     str(find_input_error(outer))
        'bad k'
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InvalidInputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
