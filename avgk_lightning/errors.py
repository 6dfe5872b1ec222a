"""Errors in what a user wrote (an argument, a file, a data set): the message says what to fix.

They subclass ValueError (and FileNotFoundError where a path is missing, ImportError where an optional
package is) so that Python callers can catch them as usual; ``train.py`` prints their message alone and exits with status 2.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)

__all__ = [
    "InvalidInputError",
    "MissingDependencyError",
    "MissingFileError",
    "NonFiniteLossError",
    "StaleCalibrationError",
    "WriteFailedError",
    "find_cause",
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


class StaleCalibrationError(InvalidInputError):
    """The λ_K held were calibrated on validation for older weights than the module's (a mid-epoch checkpoint)."""


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
    return find_cause(error, InvalidInputError)


def find_cause(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in `error`'s chain (itself, then its causes or contexts), if any.

    Example:
        >>> try:
        ...     try:
        ...         raise OSError(28, "No space left on device")
        ...     except OSError:
        ...         raise RuntimeError("unexpected pos")  # how torch.save reports a failed write
        ... except RuntimeError as outer:
        ...     find_cause(outer, OSError).strerror
        'No space left on device'
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
