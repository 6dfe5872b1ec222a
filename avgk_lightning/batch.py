"""The batch every data module of avgk-lightning yields, and the conversion of a plain tuple into it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import default_collate

from avgk_lightning.errors import InvalidInputError

__all__ = ["Batch", "collate_batch", "without_padding"]


class Batch(NamedTuple):
    """Images and what the data know about them.

    Attributes:
        images: (B, C, H, W) images, transformed as the split requires.
        target: (B,) class indices (the training labels, noisy where the data add noise); None where the
            split has no labels (``predict`` on a folder of images).
        posteriors: (B, L) true label distributions (Bayes posteriors), where the data know them.
        index: (B,) index of each sample in its split's dataset (ROLE keeps one row of state per sample).

    Example:
        >>> batch = Batch.of((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])))
        >>> batch.target.tolist(), batch.posteriors is None, batch.index is None
        ([0, 1], True, True)
    """

    images: Tensor
    target: Tensor | None = None
    posteriors: Tensor | None = None
    index: Tensor | None = None

    @classmethod
    def of(cls, batch: Any) -> Batch:
        """`batch` as a Batch: a Batch, a bare image tensor, or a tuple ``(images, target[, posteriors])``.

        Data modules that are not :class:`~avgk_lightning.data.AverageKDataModule` subclasses yield tuples;
        their batches carry no sample index.
        """
        if isinstance(batch, cls):
            return batch
        if isinstance(batch, Tensor):
            return cls(batch)
        if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            return cls(*batch)
        raise InvalidInputError(
            "Expected a batch (images, targets) or (images, targets, label_distributions), or an "
            f"avgk_lightning.batch.Batch, but got {type(batch).__name__} of length "
            f"{len(batch) if hasattr(batch, '__len__') else '?'}"
        )


def without_padding(batch: Batch) -> Batch:
    """`batch` without the padding items of a process that had no sample of its own (index < 0).

    Example:
        >>> batch = Batch(torch.zeros(2, 3, 4, 4), torch.tensor([2, 0]), index=torch.tensor([5, -1]))
        >>> without_padding(batch).target.tolist()
        [2]
    """
    if batch.index is None or bool((batch.index >= 0).all()):
        return batch
    keep = batch.index >= 0
    return Batch(*(None if field is None else field[keep] for field in batch))


def collate_batch(samples: Sequence[tuple[tuple, int]]) -> Batch:
    """Collate ``((image, target[, posterior]), index)`` samples, or ``((image,), index)`` without labels.

    Example:
        >>> samples = [((torch.zeros(3, 4, 4), 2), 7), ((torch.ones(3, 4, 4), 0), 3)]
        >>> batch = collate_batch(samples)
        >>> tuple(batch.images.shape), batch.target.tolist(), batch.index.tolist()
        ((2, 3, 4, 4), [2, 0], [7, 3])
    """
    items, indices = zip(*samples)
    fields = default_collate(list(items))
    return Batch(*fields, index=torch.tensor(indices, dtype=torch.long))
