import numpy as np
import pytest
import torch

from avgk_lightning.metrics import AverageKAccuracy, AverageKEvaluation, MeanSetSize
from tests.helpers import reference_threshold, tied_scores


def _data(n=250, num_classes=9, seed=0):
    scores = tied_scores(n, num_classes, seed)
    target = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed + 100))
    return scores, target


def _reference(scores, target, threshold):
    s, t = scores.numpy(), target.numpy()
    hits = s[np.arange(len(t)), t] >= threshold
    macro = np.mean([hits[t == c].mean() for c in np.unique(t)])
    return hits.mean(), macro, (s >= threshold).sum(1).mean()


@pytest.mark.parametrize("k", [1, 2.5, 4])
def test_calibrating_metrics_match_numpy_reference(k):
    scores, target = _data()
    lam = reference_threshold(scores.numpy(), k)
    micro, macro, size = _reference(scores, target, np.float32(lam))
    metrics = {
        "micro": AverageKAccuracy(9, k),
        "macro": AverageKAccuracy(9, k, average="macro"),
        "size": MeanSetSize(9, k),
    }
    for start in range(0, 250, 64):  # several batches
        for metric in metrics.values():
            metric.update(scores[start : start + 64], target[start : start + 64])
    assert metrics["micro"].compute().item() == pytest.approx(micro)
    assert metrics["macro"].compute().item() == pytest.approx(macro)
    assert metrics["size"].compute().item() == pytest.approx(size)
    for metric in metrics.values():
        assert metric.threshold.item() == lam


def test_fixed_threshold_streams_counts_only_and_matches_reference():
    scores, target = _data(seed=3)
    micro, macro, size = _reference(scores, target, np.float32(0.12))
    metrics = [AverageKAccuracy(9, 2, threshold=0.12), AverageKAccuracy(9, 2, 0.12, "macro"), MeanSetSize(9, 2, 0.12)]
    for metric in metrics:
        assert all(not isinstance(value, list) for value in metric.metric_state.values())  # no stored scores
        for start in range(0, 250, 50):
            metric.update(scores[start : start + 50], target[start : start + 50])
    assert [m.compute().item() for m in metrics] == pytest.approx([micro, macro, size])


def test_reset_recalibrates():
    metric = AverageKAccuracy(9, 2)
    scores, target = _data(seed=1)
    metric.update(scores, target)
    metric.compute()
    first = metric.threshold.clone()
    metric.reset()
    other, other_target = _data(seed=2)
    metric.update(other * 0.5, other_target)
    metric.compute()
    assert metric.threshold.item() == reference_threshold((other * 0.5).numpy(), 2) != first.item()


def test_evaluation_reports_every_k_and_reuses_fixed_thresholds():
    scores, target = _data(seed=4)
    evaluation = AverageKEvaluation(9, [1, 2.5, 3])
    evaluation.update(scores, target)
    results = evaluation.compute()
    for k, name in ((1, "1"), (2.5, "2.5"), (3, "3")):
        lam = np.float32(reference_threshold(scores.numpy(), k))
        micro, macro, size = _reference(scores, target, lam)
        assert results.thresholds[float(k)] == lam
        assert results[f"avgk_acc@{name}"].item() == pytest.approx(micro)
        assert results[f"avgk_acc_macro@{name}"].item() == pytest.approx(macro)
        assert results[f"set_size@{name}"].item() == pytest.approx(size)
    assert "topk_acc@2.5" not in results and "topk_acc@3" in results
    # test mode: the validation thresholds are applied unchanged to other scores
    test = AverageKEvaluation(9, [1, 2.5, 3], thresholds=results.thresholds)
    other, other_target = _data(seed=5)
    test.update(other, other_target)
    test_results = test.compute()
    lam = results.thresholds[2.5]
    assert test_results["avgk_acc@2.5"].item() == pytest.approx(_reference(other, other_target, np.float32(lam))[0])
    assert test_results.thresholds[2.5] == lam


def test_evaluation_names_missing_thresholds():
    with pytest.raises(ValueError, match="No threshold for K = 3"):
        AverageKEvaluation(9, [1, 3], thresholds={1.0: 0.5})


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: AverageKAccuracy(10, 12), "`k` to be a number in \\(0, num_classes=10\\), but got 12"),
        (lambda: AverageKAccuracy(10, 0), "but got 0"),
        (lambda: AverageKAccuracy(1, 0.5), "`num_classes` to be an integer >= 2"),
        (lambda: AverageKAccuracy(10, 2, average="none"), "`average`"),
        (lambda: MeanSetSize(10, 2, threshold="high"), "`threshold`"),
        (lambda: AverageKEvaluation(10, [1, 10]), "`ks` to be a number in \\(0, num_classes=10\\), but got 10"),
    ],
)
def test_constructor_validates_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_update_rejects_wrong_width():
    with pytest.raises(ValueError, match="num_classes=9 columns"):
        AverageKAccuracy(9, 2).update(torch.rand(4, 8), torch.zeros(4, dtype=torch.long))
