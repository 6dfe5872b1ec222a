"""Training loaders that resume in the middle of an epoch where they stopped, with the same samples and draws.

Lightning resumes a checkpoint written mid-epoch (``val_check_interval < 1``, ``every_n_train_steps``)
mid-epoch, but a plain loader starts a new shuffle there: the rest of the epoch sees other samples than
the interrupted run would have. :class:`ResumableLoader` implements Lightning's loader ``state_dict`` /
``load_state_dict``: it saves the seed of the epoch's shuffle and how many batches the epoch has trained,
and after a resume replays the same shuffle from there, then puts the random generators back to their
state at the checkpoint (the new loader's start drew from them). With the data of an in-memory data set
(augmentation on the device) the resumed run trains exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from avgk_lightning.errors import InvalidInputError
from avgk_lightning.resume import collect_rng_states, restore_rng_states

__all__ = ["ReplayableDistributedSampler", "ReplayableRandomSampler", "ResumableLoader"]


class ReplayableRandomSampler(RandomSampler):
    """``RandomSampler`` (without replacement) that remembers its epoch's seed and can replay it from a position.

    Each epoch draws its seed from the global generator exactly as ``RandomSampler`` does (same order:
    the same samples for the same seed); :meth:`replay` makes the next epoch reuse a given seed and skip
    its first samples.

    Example:
        >>> sampler = ReplayableRandomSampler(range(6))
        >>> first = list(sampler)
        >>> sampler.replay(sampler.seed, skip=4)
        >>> list(sampler) == first[4:]
        True
    """

    def __init__(self, data_source: Any) -> None:
        super().__init__(data_source)
        self.seed: int | None = None
        self._replay: tuple[int, int] | None = None

    def replay(self, seed: int, skip: int) -> None:
        """Make the next epoch the one of `seed`, from its sample number `skip` on."""
        self._replay = (seed, skip)

    def __iter__(self) -> Iterator[int]:
        if self._replay is not None:
            self.seed, skip = self._replay
            self._replay = None
        else:
            self.seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()[skip:]


class ReplayableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (the one Lightning would put in, same seed) that can skip its first samples once.

    Example:
        >>> sampler = ReplayableDistributedSampler(range(8), num_replicas=2, rank=0, seed=0)
        >>> first = list(sampler)
        >>> sampler.replay(sampler.seed, skip=3)
        >>> list(sampler) == first[3:]
        True
    """

    _skip = 0

    def replay(self, seed: int, skip: int) -> None:
        """Skip the first `skip` samples of this process in the next epoch (the seed is the fixed one)."""
        self._skip = skip

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(list(super().__iter__())[skip:])


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` with Lightning's loader ``state_dict`` / ``load_state_dict``.

    A checkpoint saves the random generators' state and, when it falls inside an epoch, the seed of that
    epoch's shuffle and how many of its batches were trained (`batches_done` tells: the loader cannot
    count them, Lightning fetches ahead). After a resume the first epoch is the one of the checkpoint:
    between epochs, the generators are put back to their state at the checkpoint before the loader
    starts (Lightning may start it twice on a resume, drawing worker seeds each time); inside an epoch,
    the same shuffle goes on from the next batch, and the generators are put back once it is fetched.
    The sampler must be a :class:`ReplayableRandomSampler` or :class:`ReplayableDistributedSampler`.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done
        self._resume: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng_states": collect_rng_states()}
        done = self.batches_done()
        if 0 < done < len(self):
            state.update(seed=self.sampler.seed, samples=done * self.batch_size, dataset_size=len(self.dataset))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "samples" in state_dict and state_dict["dataset_size"] != len(self.dataset):
            raise InvalidInputError(
                f"The checkpoint was written in the middle of an epoch over {state_dict['dataset_size']} training "
                f"samples, but the training split has {len(self.dataset)}: resume on the same data (or from a "
                "checkpoint written at the end of an epoch)."
            )
        self._resume = state_dict if "rng_states" in state_dict else None

    def __iter__(self) -> Iterator[Any]:
        state = self._resume
        if state is None:
            return super().__iter__()
        inside_epoch = "samples" in state
        if inside_epoch:
            self.sampler.replay(state["seed"], skip=state["samples"])
        else:
            restore_rng_states(state["rng_states"])
        return self._resumed(super().__iter__(), state, restore_after_first=inside_epoch)

    def _resumed(self, iterator: Iterator[Any], state: dict[str, Any], restore_after_first: bool) -> Iterator[Any]:
        """`iterator`'s items; the resume is done once its first item is fetched (an unused iterator leaves it)."""
        first = next(iterator, None)
        if self._resume is state:
            self._resume = None
        if restore_after_first:
            restore_rng_states(state["rng_states"])  # the loader's start and first fetch drew from them
        if first is None:
            return
        yield first
        yield from iterator
