"""Random number generator states in checkpoints, so that a resumed run continues as if never stopped.

Lightning restores weights, optimizer, schedulers, loops and callbacks, but not the global random
generators, which draw the training shuffle, the data-loader worker seeds and any augmentation. The
states are stored as plain lists and tensors so that checkpoints still load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["collect_rng_states", "restore_rng_states"]


def collect_rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (and CUDA's where present).

    Example:
        >>> states = collect_rng_states()
        >>> first = torch.rand(1)
        >>> restore_rng_states(states)
        >>> bool(torch.rand(1) == first)
        True
    """
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global generators back to `states` (from :func:`collect_rng_states`)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
