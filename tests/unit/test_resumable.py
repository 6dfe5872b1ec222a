"""ResumableLoader: a loader stopped inside an epoch goes on with the same samples and random draws."""

import pytest
import torch

from avgk_lightning.data.resumable import ReplayableDistributedSampler, ReplayableRandomSampler, ResumableLoader
from avgk_lightning.errors import InvalidInputError


def _loader(size=10, batch_size=2, done=lambda: 0, sampler=None):
    data = list(range(size))
    sampler = sampler or ReplayableRandomSampler(data)
    return ResumableLoader(data, batch_size=batch_size, sampler=sampler, batches_done=done)


def test_the_shuffle_is_random_samplers_for_the_same_global_seed():
    torch.manual_seed(3)
    reference = list(torch.utils.data.DataLoader(list(range(10)), batch_size=2, shuffle=True))
    torch.manual_seed(3)
    assert [batch.tolist() for batch in _loader()] == [batch.tolist() for batch in reference]


def test_a_loader_resumed_inside_an_epoch_gives_the_rest_of_it_and_the_same_draws_after():
    torch.manual_seed(0)
    trained = []
    original = _loader(done=lambda: len(trained))
    iterator = iter(original)
    trained += [next(iterator), next(iterator), next(iterator)]  # 3 of 5 batches, then a checkpoint
    state = original.state_dict()
    rest = [batch.tolist() for batch in iterator]
    draws = torch.rand(4)  # what the training would draw next (augmentation, dropout)
    torch.manual_seed(123)  # the resumed process starts elsewhere
    resumed = _loader()
    resumed.load_state_dict(state)
    unused = iter(resumed)  # Lightning may start a loader and drop it
    del unused
    assert [batch.tolist() for batch in resumed] == rest
    assert torch.equal(torch.rand(4), draws)
    assert state["samples"] == 6 and state["dataset_size"] == 10


def test_a_checkpoint_between_epochs_replays_the_next_epoch_from_the_generators_state():
    torch.manual_seed(0)
    original = _loader(done=lambda: 5)
    list(original)
    state = original.state_dict()
    next_epoch = [batch.tolist() for batch in original]
    torch.manual_seed(9)
    resumed = _loader()
    resumed.load_state_dict(state)
    iter(resumed)  # started twice: the generators are put back each time until a batch is fetched
    assert "samples" not in state and [batch.tolist() for batch in resumed] == next_epoch


def test_a_mid_epoch_checkpoint_of_another_training_split_is_refused():
    original = _loader(done=lambda: 1)
    iter(original).__next__()
    message = "middle of an epoch over 10 training samples, but the training split has 12"
    with pytest.raises(InvalidInputError, match=message):
        _loader(size=12).load_state_dict(original.state_dict())


def test_the_distributed_sampler_skips_this_process_samples_once():
    sampler = ReplayableDistributedSampler(list(range(9)), num_replicas=2, rank=1, shuffle=True, seed=4)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.replay(sampler.seed, skip=2)
    assert list(sampler) == full[2:] and list(sampler) == full
