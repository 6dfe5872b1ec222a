"""The reference training recipe used when a config names no optimizer or scheduler."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["reference_optimizer", "reference_scheduler"]


def reference_optimizer(parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with learning rate 0.1, momentum 0.9 and weight decay 1e-4."""
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4)


def reference_scheduler(
    optimizer: torch.optim.Optimizer, max_epochs: int | None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The rate divided by 10 at 50% and 75% of `max_epochs` (constant when the run has no epoch limit).

    Example:
        >>> optimizer = reference_optimizer([nn.Parameter(torch.zeros(1))])
        >>> reference_scheduler(optimizer, max_epochs=100).milestones
        Counter({50: 1, 75: 1})
    """
    milestones = [] if not max_epochs or max_epochs < 0 else [max_epochs // 2, (3 * max_epochs) // 4]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
