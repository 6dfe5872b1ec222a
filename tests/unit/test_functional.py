import numpy as np
import pytest
import torch

from avgk_lightning.functional import (
    average_k_accuracy,
    average_k_sets,
    average_k_threshold,
    batch_pseudo_label_threshold,
    mean_set_size,
    pseudo_labels,
    topk_accuracy,
)
from tests.helpers import reference_threshold, tied_scores


@pytest.mark.parametrize("k", [1, 2, 2.5, 3.7, 9])
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_equals_sort_reference_with_ties(k, seed):
    scores = tied_scores(97, 10, seed)
    assert len(np.unique(scores.numpy())) < scores.numel() / 10  # many ties
    assert average_k_threshold(scores, k).item() == pytest.approx(reference_threshold(scores.numpy(), k), abs=0)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_threshold_equals_sort_reference_on_large_input(k):
    # Above 2**20 values the selection runs on a sampled pre-filter: it must stay exact.
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(1200, 1000, generator=generator).mul(3).softmax(dim=1)
    scores[:, :5] = scores[:, :1]  # exact ties at the top too
    assert average_k_threshold(scores, k).item() == reference_threshold(scores.numpy(), k)


def test_threshold_splits_values_evenly():
    scores = torch.rand(50, 8, generator=torch.Generator().manual_seed(0))
    for k in (0.5, 1, 2.5, 7):
        threshold = average_k_threshold(scores, k)
        assert (scores >= threshold).sum().item() == round(50 * k)  # distinct values: exactly N*k above


def test_sets_accuracy_and_size_against_loops():
    scores = tied_scores(200, 12, seed=5)
    target = torch.randint(0, 12, (200,), generator=torch.Generator().manual_seed(6))
    threshold = average_k_threshold(scores, 2.5)
    sets = average_k_sets(scores, threshold)
    rows = scores.numpy()
    lam = threshold.item()
    expected_sets = [[j for j in range(12) if rows[i, j] >= lam] for i in range(200)]
    assert [torch.nonzero(row).flatten().tolist() for row in sets] == expected_sets
    hits = [int(target[i].item() in expected_sets[i]) for i in range(200)]
    assert average_k_accuracy(scores, target, threshold).item() == pytest.approx(np.mean(hits))
    per_class = [np.mean([hits[i] for i in range(200) if target[i] == c]) for c in range(12) if (target == c).any()]
    assert average_k_accuracy(scores, target, threshold, average="macro").item() == pytest.approx(np.mean(per_class))
    assert mean_set_size(scores, threshold).item() == pytest.approx(np.mean([len(s) for s in expected_sets]))


def test_macro_ignores_classes_absent_from_target():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    target = torch.tensor([0, 1, 1])  # class 2 absent
    # class 0: 1/1 hit; class 1: sample 1 hit (0.7), sample 2 miss (0.3) -> 1/2; macro = (1 + 0.5) / 2
    assert average_k_accuracy(scores, target, 0.5, average="macro").item() == pytest.approx(0.75)
    assert average_k_accuracy(scores, target, 0.5).item() == pytest.approx(2 / 3)


def test_topk_accuracy_against_argsort():
    scores = torch.rand(300, 7, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(2))
    order = np.argsort(-scores.numpy(), axis=1)
    for k in (1, 2, 5):
        expected = np.mean([target[i].item() in order[i, :k] for i in range(300)])
        assert topk_accuracy(scores, target, k).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, t: average_k_threshold(s, 0), "`k` to be a number in \\(0, num_classes=4\\), but got 0"),
        (lambda s, t: average_k_threshold(s, -1.5), "but got -1.5"),
        (lambda s, t: average_k_threshold(s, 4), "`k`.*but got 4"),
        (lambda s, t: average_k_threshold(s[0], 1), "`scores` to be a float tensor of shape \\(N, L\\)"),
        (lambda s, t: average_k_accuracy(s, t[:2], 0.5), "`target` to be a 1-D tensor of length N=3"),
        (lambda s, t: average_k_accuracy(s, torch.tensor([0, 1, 4]), 0.5), "`target`.*\\[0, 4\\), but got 4"),
        (lambda s, t: average_k_accuracy(s, torch.tensor([0, -1, 2]), 0.5), "but got -1"),
        (lambda s, t: average_k_accuracy(s, t, 0.5, average="weighted"), "`average`.*'weighted'"),
        (lambda s, t: topk_accuracy(s, t, 5), "`k` to be an integer in \\[1, 4\\], but got 5"),
        (lambda s, t: batch_pseudo_label_threshold(s, t, 0.5), "`k` to be a number in \\[1, num_classes=4\\)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, message):
    scores = torch.rand(3, 4)
    target = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=message):
        call(scores, target)


def test_true_label_is_always_positive():
    generator = torch.Generator().manual_seed(0)
    probs = torch.randn(64, 20, generator=generator).softmax(dim=1)
    target = torch.randint(0, 20, (64,), generator=generator)
    labels = pseudo_labels(probs, target, threshold=2.0)  # above every score: only the true labels
    assert torch.equal(labels, torch.nn.functional.one_hot(target, 20).float())
    labels = pseudo_labels(probs, target, threshold=batch_pseudo_label_threshold(probs, target, 3))
    assert labels[torch.arange(64), target].eq(1).all()
    assert not labels.requires_grad


@pytest.mark.parametrize("k", [1, 2, 3.5, 5])
def test_batch_scope_gives_exactly_k_positives_on_average(k):
    generator = torch.Generator().manual_seed(int(k * 10))
    logits = torch.randn(32, 20, generator=generator, requires_grad=True)
    probs = logits.softmax(dim=1)
    target = torch.randint(0, 20, (32,), generator=generator)
    labels = pseudo_labels(probs, target, batch_pseudo_label_threshold(probs, target, k))
    assert labels.sum().item() == 32 + round(32 * (k - 1))
    assert labels.sum(dim=1).mean().item() == pytest.approx(k, abs=1 / 64)
