"""Test-time diagnostics against a hand-built example, and coverage calibration against a numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avgk_lightning.diagnostics import coverage_threshold
from avgk_lightning.metrics import AverageKEvaluation
from avgk_lightning.report import diagnostics_table

# Six samples, four classes, λ = 0.3 for K = 1.5. Training counts 5 / 50 / 500 / 30 put class 0 in
# "few" (< 20), classes 1 and 3 in "medium" (20..100), class 2 in "many" (> 100).
SCORES = torch.tensor(
    [
        [0.90, 0.05, 0.03, 0.02],  # set {0}         size 1, true 0: hit
        [0.40, 0.35, 0.20, 0.05],  # set {0, 1}      size 2, true 1: hit
        [0.10, 0.10, 0.10, 0.70],  # set {3}         size 1, true 2: miss
        [0.20, 0.20, 0.25, 0.25],  # set {}          size 0, true 2: miss
        [0.31, 0.32, 0.33, 0.04],  # set {0, 1, 2}   size 3, true 2: hit
        [0.50, 0.30, 0.10, 0.10],  # set {0, 1}      size 2, true 3: miss
    ]
)
TARGET = torch.tensor([0, 1, 2, 2, 2, 3])
COUNTS = [5, 50, 500, 30]


def _evaluation(**kwargs) -> AverageKEvaluation:
    evaluation = AverageKEvaluation(4, [1.5, 2], thresholds={1.5: 0.3, 2: 0.3}, class_counts=COUNTS, diagnostics=True)
    evaluation.update(SCORES, TARGET)
    return evaluation


def test_breakdown_by_class_frequency_and_by_set_size_by_hand():
    results = {name: float(value) for name, value in _evaluation().compute().items()}
    # few: sample 0 (hit) -> 1; medium: samples 1 (hit) and 5 (miss) -> 1/2; many: samples 2, 3, 4 -> 1/3
    assert results["avgk_acc_few@1.5"] == 1.0
    assert results["avgk_acc_medium@1.5"] == 0.5
    assert results["avgk_acc_many@1.5"] == pytest.approx(1 / 3)
    # sizes 1, 2, 1, 0, 3, 2: size 1 -> samples 0 (hit), 2 (miss); size 2 -> 1 (hit), 5 (miss); 3-5 -> 4 (hit)
    assert results["coverage_size1@1.5"] == 0.5
    assert results["coverage_size2@1.5"] == 0.5
    assert results["coverage_size3-5@1.5"] == 1.0
    assert "coverage_size6+@1.5" not in results  # no set of 6 or more
    assert results["empty_rate@1.5"] == pytest.approx(1 / 6)
    assert results["singleton_rate@1.5"] == pytest.approx(2 / 6)
    # top-2 sets: {0,1} hit? true 0 yes; {0,1} true 1 yes; {3, 0} (ties 0.10: the true class 2 counts, its
    # score equals the 2nd) yes; {2,3} true 2 yes; {2,1} true 2 yes; {0,1} true 3 no.
    assert results["topk_acc_few@2"] == 1.0 and results["topk_acc_medium@2"] == 0.5
    assert results["topk_acc_many@2"] == 1.0


def test_set_size_histogram_and_per_class_accuracy_are_kept_for_plots():
    evaluation = _evaluation()
    result = evaluation.compute()
    assert result.set_size_histograms[1.5].tolist() == [1, 2, 2, 1, 0]  # sizes 0..4
    assert result.per_class_accuracy[1.5].tolist() == pytest.approx([1.0, 1.0, 1 / 3, 0.0])


def test_the_diagnostics_table_shows_the_numbers():
    results = {f"test/{name}": float(value) for name, value in _evaluation().compute().items()}
    table = diagnostics_table(results, "test", [1.5, 2], "multilabel")
    assert (
        "| multi-label head | 1.5 | 1.0000 | 0.5000 | 0.3333 | 0.5000 | 0.5000 | 1.0000 | - | 0.1667 | 0.3333 |"
        in table
    )
    assert "| top-K, multi-label head | 2 | 1.0000 | 0.5000 | 1.0000 | - |" in table


def _reference_sets(scores: np.ndarray, target: np.ndarray, test_scores: np.ndarray, coverage: float):
    """MAPIE's / TorchCP's LAC: q = quantile of 1 - s_y at ceil((n+1)(1-alpha))/n ('higher'); sets 1 - s <= q."""
    n = len(target)
    level = math.ceil((n + 1) * coverage) / n
    if level > 1:
        return np.ones_like(test_scores, dtype=bool)
    q = np.quantile(1 - scores[np.arange(n), target], level, method="higher")
    return (1 - test_scores) <= q


@pytest.mark.parametrize("coverage, n", [(0.9, 1000), (0.8, 999), (0.95, 37), (0.5, 10), (0.999, 50)])
def test_coverage_threshold_gives_the_sets_of_the_split_conformal_reference(coverage, n):
    generator = torch.Generator().manual_seed(n)
    # Scores on a 1/1024 grid, so that 1 - s is exact in float and the two formulas compare exactly.
    scores = (torch.rand(n, 20, generator=generator) * 1024).floor() / 1024
    target = torch.randint(0, 20, (n,), generator=generator)
    test_scores = (torch.rand(500, 20, generator=generator) * 1024).floor() / 1024
    threshold = coverage_threshold(scores, target, coverage)
    expected = _reference_sets(scores.numpy(), target.numpy(), test_scores.numpy(), coverage)
    assert np.array_equal((test_scores >= threshold).numpy(), expected)
    on_calibration = (scores.gather(1, target.unsqueeze(1)) >= threshold).float().mean().item()
    assert on_calibration >= min(1.0, math.ceil((n + 1) * coverage) / n) - 1e-9  # the finite-sample correction


def test_coverage_is_calibrated_on_validation_and_applied_at_test():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(400, 10, generator=generator).softmax(dim=1)
    target = torch.randint(0, 10, (400,), generator=generator)
    validation = AverageKEvaluation(10, [2], coverages=[0.9])
    validation.update(scores[:200], target[:200])
    results = validation.compute()
    threshold = results.coverage_thresholds[0.9]
    assert threshold == coverage_threshold(scores[:200], target[:200], 0.9)
    assert results["coverage@0.9"] >= 0.9
    test = AverageKEvaluation(10, [2], thresholds={2: 0.1}, coverages=[0.9])
    test.set_thresholds({2: 0.1}, {0.9: float(threshold)})
    test.update(scores[200:], target[200:])
    results = test.compute()
    hits = scores[200:].gather(1, target[200:].unsqueeze(1)).squeeze(1) >= threshold
    assert results["coverage@0.9"] == hits.float().mean()
    assert results["coverage_set_size@0.9"] == (scores[200:] >= threshold).sum(1).float().mean()
