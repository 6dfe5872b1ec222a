"""Per-epoch training state: accumulated on each process, merged by one all-reduce at the epoch's end.

Two pieces of training state change with the data an epoch has seen: the pseudo-label threshold λ_pl
of the two-head loss (from a histogram of softmax scores, :mod:`avgk_lightning.pseudo_labels`) and
ROLE's label estimates (one row per training sample, :mod:`avgk_lightning.losses.role`). Both follow
this one protocol: each process accumulates its own part, :func:`merge_across_processes` sums the
parts with a single all-reduce, and :meth:`EpochState.merge` turns the sum into the new state, which
``state_dict`` saves in checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["EpochState", "merge_across_processes"]


class EpochState(ABC):
    """Training state accumulated over an epoch on each process, merged across processes at its end.

    Example:
        >>> import torch
        >>> class Count(EpochState):  # samples seen, over all processes
        ...     def __init__(self):
        ...         self.local, self.total = torch.zeros(1), 0
        ...     def local_totals(self):
        ...         return self.local
        ...     def merge(self, totals):
        ...         self.total, self.local = int(totals), torch.zeros(1)
        ...     def state_dict(self):
        ...         return {"total": self.total}
        ...     def load_state_dict(self, state):
        ...         self.total = state["total"]
        >>> count = Count()
        >>> count.local += 5
        >>> merge_across_processes(count, reduce_sum=lambda tensor: tensor * 2)  # two processes, 5 each
        >>> count.total
        10
    """

    @abstractmethod
    def local_totals(self) -> Tensor | None:
        """What this process accumulated since the last merge, to be summed over processes (None: nothing).

        Every process must return a tensor of the same shape, or every process None: the sum is a collective.
        """

    @abstractmethod
    def merge(self, totals: Tensor) -> None:
        """Take the sum over processes of :meth:`local_totals` and reset the local accumulation."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The state saved in checkpoints (plain values and tensors: loadable with ``weights_only=True``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def merge_across_processes(state: EpochState, reduce_sum: Callable[[Tensor], Tensor]) -> None:
    """Sum `state`'s local totals over processes (one collective `reduce_sum`) and merge them into it."""
    totals = state.local_totals()
    if totals is not None:
        state.merge(reduce_sum(totals))
