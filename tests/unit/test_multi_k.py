"""One training for several K: the pseudo-labels, λ_pl, gradients, evaluation and report of a multi-label head per K,
each checked against the same computation done for that K alone or against a sort-based reference."""

import numpy as np
import pytest
import torch
from torch import nn

from avgk_lightning.checkpoint import check_trained_ks
from avgk_lightning.evaluation import Evaluation
from avgk_lightning.losses import TwoHeadLoss
from avgk_lightning.metrics import AverageKEvaluation
from avgk_lightning.models import TwoHeadNetwork
from avgk_lightning.pseudo_labels import PseudoLabelRule, PseudoLabelStatistics
from avgk_lightning.report import results_table

KS = (1.5, 2.0, 3.0)


def _batch(seed: int, size: int = 64, num_classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(size, num_classes, generator=generator) * 2
    target = torch.randint(0, num_classes, (size,), generator=generator)
    return logits, target


@pytest.mark.parametrize("threshold", [None, [0.2, 0.1, 0.05]], ids=["batch rule", "epoch thresholds"])
def test_each_k_gets_the_pseudo_labels_of_the_single_k_rule(threshold):
    logits, target = _batch(0)
    step = PseudoLabelRule(KS, threshold)(logits, target)
    assert step.labels.shape == (64, 3, 10) and step.threshold.shape == (3,)
    for index, k in enumerate(KS):
        single = PseudoLabelRule(k, None if threshold is None else threshold[index])(logits, target)
        assert torch.equal(step.labels[:, index], single.labels), k
        assert torch.equal(step.threshold[index], single.threshold), k


def test_the_batch_rule_puts_b_times_k_minus_1_non_true_positives_in_each_head():
    logits, target = _batch(1)
    labels = PseudoLabelRule(KS)(logits, target).labels
    assert torch.all(labels[torch.arange(64), :, target] == 1)  # the true label, in every head
    for index, k in enumerate(KS):
        assert int(labels[:, index].sum()) == 64 + round(64 * (k - 1)), k  # continuous scores: no ties


def _sort_reference(probs: np.ndarray, target: np.ndarray, k: float) -> tuple[float, float]:
    """The ((K-1)N)-th and ((K-1)N+1)-th largest non-true scores, by a full sort."""
    non_true = np.sort(probs[np.arange(probs.shape[1]) != target[:, None]])[::-1]
    count = round((k - 1) * probs.shape[0])
    return float(non_true[count]), float(non_true[count - 1])


def test_one_epoch_histogram_gives_every_k_its_threshold_as_a_full_sort_does():
    statistics = PseudoLabelStatistics("epoch")
    singles = {k: PseudoLabelStatistics("epoch") for k in KS}
    statistics.start_epoch(KS, "cpu")
    for k, single in singles.items():
        single.start_epoch(k, "cpu")
    probs, targets = [], []
    for seed in range(5):
        logits, target = _batch(seed, size=100)
        statistics.update(PseudoLabelRule(KS)(logits, target))
        for k, single in singles.items():
            single.update(PseudoLabelRule(k)(logits, target))
        probs.append(logits.softmax(dim=1))
        targets.append(target)
    statistics.merge(statistics.local_totals())
    probs, target = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    assert len(statistics.threshold) == 3 and len(statistics.set_size) == 3
    for index, (k, single) in enumerate(singles.items()):
        single.merge(single.local_totals())
        assert statistics.threshold[index] == single.threshold and statistics.set_size[index] == single.set_size
        below, above = _sort_reference(probs, target, k)
        # inside the bin of the boundary score: at most 2**-11 of its value away from the sorted neighbours
        assert below * (1 - 2**-11) <= statistics.threshold[index] <= above * (1 + 2**-11), k
    assert statistics.logged() == {
        **{f"train/pseudo_label_threshold@{k:g}": pytest.approx(t) for k, t in zip(KS, statistics.threshold)},
        **{f"train/pseudo_label_set_size@{k:g}": pytest.approx(s) for k, s in zip(KS, statistics.set_size)},
    }


def test_each_head_learns_as_alone_and_the_backbone_gets_the_mean_of_their_gradients():
    torch.manual_seed(0)
    images, target = torch.randn(8, 6), torch.randint(0, 5, (8,))
    network = TwoHeadNetwork(nn.Linear(6, 4), feature_width=4, num_classes=5, multilabel_heads=2)
    pseudo_labels = PseudoLabelRule((1.5, 3.0))(network(images)[0], target).labels
    loss = TwoHeadLoss(mu=0.7)
    softmax_logits, multilabel_logits = network(images)
    loss(softmax_logits, multilabel_logits, target, pseudo_labels)["loss"].backward()

    head_gradients, backbone_gradients = [], []
    for index in range(2):  # the same weights as a network of one head, trained on that head's labels
        single = TwoHeadNetwork(nn.Linear(6, 4), feature_width=4, num_classes=5)
        single.backbone.load_state_dict(network.backbone.state_dict())
        single.softmax_head.load_state_dict(network.softmax_head.state_dict())
        single.multilabel_head.load_state_dict(network.head("multilabel", index).state_dict())
        single_softmax, single_multilabel = single(images)
        terms = loss(single_softmax, single_multilabel, target, pseudo_labels[:, index])
        (terms["loss"] - terms["cross_entropy"]).backward()  # the multi-label term alone
        head_gradients.append(single.multilabel_head.weight.grad)
        backbone_gradients.append(single.backbone.weight.grad)
    torch.testing.assert_close(network.multilabel_head.weight.grad, torch.cat(head_gradients))
    cross_entropy = TwoHeadNetwork(nn.Linear(6, 4), feature_width=4, num_classes=5)
    cross_entropy.load_state_dict(
        {**network.state_dict(), "multilabel_head.weight": torch.zeros(5, 4), "multilabel_head.bias": torch.zeros(5)}
    )
    torch.nn.functional.cross_entropy(cross_entropy(images)[0], target).backward()
    expected = cross_entropy.backbone.weight.grad + (backbone_gradients[0] + backbone_gradients[1]) / 2
    torch.testing.assert_close(network.backbone.weight.grad, expected)


def test_the_loss_averages_the_bce_over_the_heads():
    logits, target = _batch(2, size=16, num_classes=6)
    multilabel = torch.randn(16, 3, 6)
    labels = PseudoLabelRule(KS)(logits, target).labels
    for reduction in ("sum", "mean"):
        loss = TwoHeadLoss(bce_reduction=reduction)
        per_head = [loss(logits, multilabel[:, i], target, labels[:, i])["binary_cross_entropy"] for i in range(3)]
        together = loss(logits, multilabel, target, labels)
        torch.testing.assert_close(together["binary_cross_entropy"], torch.stack(per_head).mean())


def test_each_head_is_evaluated_at_its_own_k_and_the_softmax_head_at_every_k():
    generator = torch.Generator().manual_seed(3)
    multilabel = torch.rand(50, 2, 8, generator=generator)
    softmax = torch.rand(50, 8, generator=generator).softmax(dim=1)
    target = torch.randint(0, 8, (50,), generator=generator)
    evaluation = Evaluation(8, ["multilabel", "softmax"], ks=[1, 1.5, 3], coverages=[0.9], multilabel_ks=[1.5, 3])
    evaluation.update("val", {"multilabel": multilabel, "softmax": softmax}, target)
    results = evaluation.compute("val")
    logged = evaluation.logged("val", results)
    for index, k in enumerate((1.5, 3.0)):
        alone = AverageKEvaluation(8, [k], coverages=[0.9] if index == 0 else [])
        alone.update(multilabel[:, index], target)
        for name, value in alone.compute().items():
            assert logged[f"val/{name}"] == pytest.approx(float(value)), name
    assert "val/avgk_acc@1" not in logged and "val/softmax/avgk_acc@1" in logged
    assert results["multilabel"].thresholds.keys() == {1.5, 3.0}


def test_the_results_table_says_which_multi_label_head_made_each_row():
    results = {"test/avgk_acc@2": 0.9, "test/softmax/avgk_acc@1": 0.6, "test/softmax/avgk_acc@2": 0.8}
    table = results_table(results, "test", [1.0, 2.0], "multilabel", multilabel_ks=[2.0, 3.0])
    assert table.splitlines()[0].startswith("| K | multi-label head | avg-K acc, multi-label head |")
    assert table.splitlines()[2].startswith("| 1 | - | - | 0.6000 |")
    assert table.splitlines()[3].startswith("| 2 | K=2 | 0.9000 | 0.8000 |")


@pytest.mark.parametrize(
    "saved, asked, message",
    [
        (
            [2.0, 3.0],
            (2.0,),
            "a multi-label head for each K = 2, 3, but the model asks for K = 2 .*init_args.k \\[2,3\\], or",
        ),
        (None, (2.0, 3.0), "one multi-label head, but the model asks for K = 2, 3 .*init_args.k one number, or"),
        ([1.5, 3.0], (3.0, 1.5), "asks for K = 3, 1.5"),
    ],
)
def test_a_checkpoint_trained_for_other_ks_is_refused(saved, asked, message):
    with pytest.raises(ValueError, match=message):
        check_trained_ks(saved, asked)


def test_checkpoints_of_one_k_keep_loading_each_other():
    check_trained_ks(None, (2.0,))
    check_trained_ks([3.0], (2.0,))
    check_trained_ks([1.5, 3.0], (1.5, 3.0))


def test_a_multi_k_model_serves_another_k_from_its_softmax_head_only():
    from avgk_lightning import TwoHeadModule

    assert TwoHeadModule(num_classes=10, k=[2, 3], predict_k=5, predict_head="softmax").prediction_head() == "softmax"
    assert TwoHeadModule(num_classes=10, k=[2, 3], predict_k=3, predict_head=None).prediction_head() == "multilabel"
    serving_5 = TwoHeadModule(num_classes=10, k=[2, 3], predict_k=5)  # the default, validation, compares...
    serving_5.calibration.average_k = {"multilabel": {2.0: 0.4, 3.0: 0.3}, "softmax": {5.0: 0.1}}
    serving_5.calibration.accuracy = {"multilabel": {2.0: 0.9, 3.0: 0.95}, "softmax": {5.0: 0.97}}
    assert serving_5.prediction_head() == "softmax"  # ...the heads that serve K = 5: the softmax head alone


def test_an_epoch_interrupted_by_a_checkpoint_ends_with_the_thresholds_of_the_whole_epoch():
    steps = [PseudoLabelRule(KS)(*_batch(seed, size=50)) for seed in range(6)]
    whole = PseudoLabelStatistics("epoch")
    whole.start_epoch(KS, "cpu")
    for step in steps:
        whole.update(step)
    whole.merge(whole.local_totals())

    interrupted = PseudoLabelStatistics("epoch")
    interrupted.start_epoch(KS, "cpu")
    for step in steps[:4]:
        interrupted.update(step)
    saved = {**interrupted.state_dict(), "interrupted_epoch": interrupted.epoch_so_far(lambda totals: totals)}
    resumed = PseudoLabelStatistics("epoch")  # a new process, from the mid-epoch checkpoint
    resumed.load_state_dict(saved)
    resumed.resume_epoch("cpu", keep_counts=True)
    for step in steps[4:]:
        resumed.update(step)
    resumed.merge(resumed.local_totals())
    assert resumed.threshold == whole.threshold and resumed.set_size == whole.set_size
