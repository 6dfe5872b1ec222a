"""Each training loss against hand-computed values on one 2 x 4 example, and where gradients flow.

The example: two samples, four classes, multi-label logits m = [[2, 0, 0, -2], [0, 1, -1, 0]], observed
labels y = [0, 2] (the observed entries are m[0, 0] = 2 and m[1, 2] = -1). With sp(x) = log(1 + e^x),
-log(sigmoid(x)) = sp(-x) and -log(1 - sigmoid(x)) = sp(x); every loss averages over the 8 entries.
"""

from __future__ import annotations

import math

import pytest
import torch

from avgk_lightning import TwoHeadModule
from avgk_lightning.losses import LOSSES, AverageKLoss, RegularisedOnlineLabelEstimationLoss, build_loss
from tests.helpers import ROOT

LOGITS = torch.tensor([[2.0, 0.0, 0.0, -2.0], [0.0, 1.0, -1.0, 0.0]])
TARGET = torch.tensor([0, 2])


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def entropy(x: float) -> float:
    """Binary entropy of sigmoid(x): g sp(-x) + (1 - g) sp(x)."""
    return sigmoid(x) * sp(-x) + (1 - sigmoid(x)) * sp(x)


def _loss(method: str, **options) -> dict[str, float]:
    terms = build_loss(method, num_classes=4, k=options.pop("k", 1.0), options=options)(None, LOGITS, TARGET)
    return {name: float(value) for name, value in terms.items()}


def test_assume_negative_by_hand():
    # observed: sp(-2), sp(1); unobserved: sample 0 m = 0, 0, -2 -> sp(0), sp(0), sp(-2); sample 1 m = 0, 1, 0.
    expected = (sp(-2) + sp(1) + 2 * sp(0) + sp(-2) + 2 * sp(0) + sp(1)) / 8
    assert _loss("an")["loss"] == pytest.approx(expected, rel=1e-6)


def test_assume_negative_with_label_smoothing_by_hand():
    # BCE against target t is t sp(-x) + (1 - t) sp(x): t = 0.9 on the observed entries, 0.1 elsewhere.
    observed = (0.9 * sp(-2) + 0.1 * sp(2)) + (0.9 * sp(1) + 0.1 * sp(-1))
    unobserved = 4 * (0.1 * sp(0) + 0.9 * sp(0)) + (0.1 * sp(2) + 0.9 * sp(-2)) + (0.1 * sp(-1) + 0.9 * sp(1))
    assert _loss("an_ls")["loss"] == pytest.approx((observed + unobserved) / 8, rel=1e-6)
    # label_smoothing 0 is AN
    assert _loss("an_ls", label_smoothing=0.0)["loss"] == pytest.approx(_loss("an")["loss"], rel=1e-6)


def test_weak_assume_negative_by_hand():
    # negatives weighted 1 / (C - 1) = 1/3
    positive = sp(-2) + sp(1)
    negative = (2 * sp(0) + sp(-2) + 2 * sp(0) + sp(1)) / 3
    terms = _loss("wan")
    assert terms["loss"] == pytest.approx((positive + negative) / 8, rel=1e-6)
    assert terms["negative"] == pytest.approx(negative / 8, rel=1e-6)


def test_expected_positive_regulariser_by_hand():
    # Sums of sigmoid per sample: s(2) + 2 s(0) + s(-2) = 2 and 2 s(0) + s(1) + s(-1) = 2; mean 2.
    # With K = 1.5: (2 - 1.5)^2 / 4^2 = 1/64.
    terms = _loss("epr", k=1.5)
    assert terms["positive"] == pytest.approx((sp(-2) + sp(1)) / 8, rel=1e-6)
    assert terms["regulariser"] == pytest.approx(1 / 64, rel=1e-6)
    assert terms["loss"] == pytest.approx((sp(-2) + sp(1)) / 8 + 1 / 64, rel=1e-6)


def test_entropy_maximisation_by_hand():
    # -alpha H(g) on the six unobserved entries: H at m = 0 is log 2 (four of them), plus H(s(-2)), H(s(1)).
    unobserved_entropy = 4 * math.log(2) + entropy(-2) + entropy(1)
    terms = _loss("em", alpha=0.2)
    assert terms["unobserved_entropy"] == pytest.approx(unobserved_entropy / 8, rel=1e-6)
    assert terms["loss"] == pytest.approx((sp(-2) + sp(1) - 0.2 * unobserved_entropy) / 8, rel=1e-6)


def _role_with_zero_estimates(estimator_lr: float = 1.0) -> RegularisedOnlineLabelEstimationLoss:
    loss = RegularisedOnlineLabelEstimationLoss(k=1.0, estimator_lr=estimator_lr)
    loss.setup_samples(5)
    loss.estimates.load_state_dict({"estimate_logits": torch.zeros(5, 4), "seen": torch.ones(5, dtype=torch.bool)})
    return loss


def test_role_classifier_loss_and_estimator_step_by_hand():
    loss = _role_with_zero_estimates(estimator_lr=1.0)
    terms = loss(None, LOGITS, TARGET, sample_indices=torch.tensor([3, 1]))
    # Classifier: half the observed term, half BCE against the estimates (all 0.5), half EPR (K = 1):
    # BCE(x, 0.5) = (sp(-x) + sp(x)) / 2; EPR = (2 - 1)^2 / 16.
    cross = sum((sp(-x) + sp(x)) / 2 for x in LOGITS.flatten().tolist()) / 8
    classifier = 0.5 * (sp(-2) + sp(1)) / 8 + 0.5 * cross + 0.5 / 16
    # Estimator at z = 0 (estimates 0.5): observed term 0.5 * log 2 / 4 per sample; BCE of 0.5 against
    # the scores g: g sp(0) + (1 - g) sp(0) = log 2 per entry; EPR of the estimates: (2 - 1)^2 / 16.
    estimator = 0.5 * (2 * math.log(2)) / 8 + 0.5 * math.log(2) + 0.5 / 16
    assert terms["estimator"] == pytest.approx(estimator, rel=1e-6)
    assert terms["loss"] == pytest.approx(classifier + estimator, rel=1e-6)
    # One SGD step per entry (gradient times B*C): 0.5 [observed] (s(z) - 1) + 0.5 (s(z) - g)
    # + 0.5 * 2 (mean sum - K) / C * s'(z) = -0.25 [observed] + 0.5 (0.5 - g) + 0.5 * 2 * 1 / 4 * 0.25.
    for row, sample in ((3, 0), (1, 1)):
        for j in range(4):
            g = sigmoid(LOGITS[sample, j].item())
            gradient = -0.25 * (j == TARGET[sample].item()) + 0.5 * (0.5 - g) + 0.0625
            assert loss.estimates.logits[row, j].item() == pytest.approx(-gradient, abs=1e-6), (row, j)


def test_role_updates_only_the_rows_of_the_batch():
    loss = _role_with_zero_estimates()
    loss(None, LOGITS, TARGET, sample_indices=torch.tensor([4, 0]))
    changed = (loss.estimates.logits != 0).any(dim=1)
    assert changed.tolist() == [True, False, False, False, True]


def test_role_sets_the_observed_entry_high_on_first_visit():
    loss = RegularisedOnlineLabelEstimationLoss(k=1.0, estimator_lr=1e-9)  # a negligible step
    loss.setup_samples(6)
    loss(None, LOGITS, TARGET, sample_indices=torch.tensor([5, 2]))
    initial = math.log(0.995 / 0.005)
    assert loss.estimates.logits[5, 0].item() == pytest.approx(initial, abs=1e-5)
    assert loss.estimates.logits[2, 2].item() == pytest.approx(initial, abs=1e-5)
    bound = math.log(0.6 / 0.4)
    others = loss.estimates.logits[[0, 1, 3, 4]]
    assert others.abs().max() <= bound and others.std() > 0.1  # the uniform initialisation
    assert loss.estimates.seen.tolist() == [False, False, True, False, False, True]


@pytest.mark.parametrize("method", ["an", "an_ls", "wan", "epr", "em", "role"])
def test_baselines_train_the_multilabel_head_and_never_the_softmax_head(method):
    torch.manual_seed(0)
    model = TwoHeadModule(num_classes=6, backbone="resnet18", k=2, method=method)
    assert model.evaluation_heads == ["multilabel"] and model.loss.set_head == "multilabel"
    assert not any(p.requires_grad for p in model.network.softmax_head.parameters())
    images, target = torch.randn(8, 3, 32, 32), torch.randint(0, 6, (8,))
    if method == "role":
        model.loss.setup_samples(8)
    softmax_logits, multilabel_logits = model(images)
    terms = model.loss(softmax_logits, multilabel_logits, target, None, torch.arange(8))
    terms["loss"].backward()
    assert model.network.softmax_head.weight.grad is None
    assert model.network.multilabel_head.weight.grad.abs().sum() > 0
    assert model.network.backbone.conv1.weight.grad.abs().sum() > 0


def test_role_estimates_get_no_gradient_from_the_network_loss():
    loss = _role_with_zero_estimates()
    logits = LOGITS.clone().requires_grad_(True)
    loss(None, logits, TARGET, sample_indices=torch.tensor([0, 1]))["loss"].backward()
    assert not loss.estimates.logits.requires_grad and logits.grad.abs().sum() > 0


def test_every_method_of_the_issue_is_registered():
    assert {"softmax", "two_head", "an", "an_ls", "wan", "epr", "role", "em"} <= set(LOSSES)


def test_a_user_loss_plugs_in_by_name_and_by_class_path():
    model = TwoHeadModule(
        num_classes=4, k=2, method="tests.unit.test_losses.HalfAssumeNegative", loss_options={"scale": 0.5}
    )
    terms = model.loss(None, LOGITS, TARGET)
    assert terms["loss"].item() == pytest.approx(0.5 * _loss("an")["loss"], rel=1e-6)
    assert LOSSES["half_an"] is HalfAssumeNegative
    assert TwoHeadModule(num_classes=4, k=2, method="half_an").loss.scale == 1.0


class HalfAssumeNegative(AverageKLoss):
    """A user's loss: AN times a constant (registered as "half_an" when this module is imported)."""

    name = "half_an"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        return {"loss": self.scale * LOSSES["an"]()(softmax_logits, multilabel_logits, target)["loss"]}


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("nope", {}, "`method` to be one of \\['an', 'an_ls', .*'two_head', 'wan'\\] or the dotted path"),
        ("no.such.Loss", {}, "Cannot import loss class 'no.such.Loss'"),
        ("torch.nn.MSELoss", {}, "is not a subclass of AverageKLoss"),
        (
            "em",
            {"alhpa": 0.2},
            "Unknown option\\(s\\) 'alhpa' in argument `loss_options` for method 'em': it takes 'alpha'",
        ),
        ("an", {"alpha": 0.2}, "for method 'an': it takes no options"),
        ("epr", {"k": 2}, "`k` is set by the module's own argument \\(--model.k\\)"),
        ("an_ls", {"label_smoothing": 0.7}, "`label_smoothing` to be a number in \\[0, 0.5\\), but got 0.7"),
        ("role", {"estimator_lr": 0}, "`estimator_lr` to be > 0"),
        ("em", {"alpha": -1}, "`alpha` to be >= 0"),
    ],
)
def test_bad_methods_and_options_are_named(method, options, message):
    with pytest.raises(ValueError, match=message):
        TwoHeadModule(num_classes=4, k=2, method=method, loss_options=options)


def test_the_manual_example_loss_trains_by_name():
    readme = (ROOT / "docs" / "extending.md").read_text()
    code = next(block for block in readme.split("```python")[1:] if "class FocalAssumeNegative" in block)
    namespace: dict = {}
    exec(code.split("```")[0], namespace)  # noqa: S102 - runs the manual's own example
    try:
        model = TwoHeadModule(num_classes=4, k=2, method="focal_an", loss_options={"gamma": 0.0})
        # gamma 0 is plain AN
        assert model.loss(None, LOGITS, TARGET)["loss"].item() == pytest.approx(_loss("an")["loss"], rel=1e-6)
        assert model.evaluation_heads == ["multilabel"]
    finally:
        del LOSSES["focal_an"]
