"""The pseudo-label threshold's histogram of non-true scores, and PseudoLabelThreshold's argument check."""

import numpy as np
import pytest
import torch

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.callbacks import _HISTOGRAM_BINS, NonTrueScoreHistogram, _bin_indices


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_histogram_threshold_puts_the_requested_count_of_non_true_scores_above_it(k):
    generator = torch.Generator().manual_seed(k)
    target = torch.randint(0, 100, (4000,), generator=generator)
    logits = torch.randn(4000, 100, generator=generator).mul(2.5)
    logits[torch.arange(4000), target] += 4  # the true class is usually the top score
    probs = logits.softmax(dim=1)
    histogram = NonTrueScoreHistogram()
    for start in range(0, 4000, 32):
        histogram.update(probs[start : start + 32], target[start : start + 32])
    assert histogram.counts.sum().item() == 4000 * 99
    count = (k - 1) * 4000
    non_true = probs.clone()
    non_true[torch.arange(4000), target] = -1.0
    above = (non_true >= histogram.threshold(count)).sum().item()
    assert abs(above - count) <= 0.005 * count


def test_histogram_counts_every_non_true_score_in_its_bit_pattern_bin():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 50, (300,), generator=generator)
    probs = torch.randn(300, 50, generator=generator).mul(3).softmax(dim=1)
    histogram = NonTrueScoreHistogram()
    for start in range(0, 300, 64):  # a ragged last batch
        histogram.update(probs[start : start + 64], target[start : start + 64])
    # independent reference: numpy's bit patterns of the non-true scores, counted by np.bincount
    keep = np.ones((300, 50), dtype=bool)
    keep[np.arange(300), target.numpy()] = False
    patterns = probs.numpy()[keep].view(np.int32) >> 12
    reference = np.bincount(patterns, minlength=_HISTOGRAM_BINS)
    assert np.array_equal(histogram.counts.numpy(), reference)


def test_histogram_is_a_fixed_size_whatever_the_data():
    small, large = NonTrueScoreHistogram(), NonTrueScoreHistogram()
    small.update(torch.full((1, 3), 1 / 3), torch.tensor([0]))
    for _ in range(20):
        large.update(torch.rand(512, 100).softmax(dim=1), torch.zeros(512, dtype=torch.long))
    assert small.nbytes == large.nbytes < 16 * 2**20
    # scores of exactly 0 and 1 land in the first and the last bin
    assert _bin_indices(torch.tensor([0.0, 1.0])).tolist() == [0, _HISTOGRAM_BINS - 1]


def test_scope_is_validated():
    with pytest.raises(ValueError, match="`scope` to be 'epoch' or 'batch', but got 'step'"):
        PseudoLabelThreshold("step")
