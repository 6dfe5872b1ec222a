import pytest
import timm
import torch
import torch.nn.functional as F

from avgk_lightning import TwoHeadModule
from avgk_lightning.functional import batch_pseudo_label_threshold, pseudo_labels
from avgk_lightning.losses import SoftmaxLoss, TwoHeadLoss, build_loss


def test_forward_returns_both_heads_sized_from_the_backbone():
    model = TwoHeadModule(num_classes=7, backbone="resnet18", k=2)
    softmax_logits, multilabel_logits = model(torch.randn(3, 3, 32, 32))
    assert softmax_logits.shape == multilabel_logits.shape == (3, 7)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050"])
def test_head_width_matches_a_real_forward_pass(name):
    model = TwoHeadModule(num_classes=5, backbone=name, k=2).eval()
    with torch.no_grad():
        features = model.network.backbone(torch.randn(2, 3, 64, 64))
    assert model.network.softmax_head.in_features == features.shape[1] == model.network.multilabel_head.in_features
    if name.startswith("mobilenetv3"):
        assert features.shape[1] == 1024 != model.network.backbone.num_features  # the timm pitfall


def test_local_weights_file_is_loaded_without_network(tmp_path):
    reference = timm.create_model("resnet18", num_classes=0)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = TwoHeadModule(num_classes=5, backbone="resnet18", weights_path=str(path), k=2)
    assert torch.equal(model.network.backbone.conv1.weight, reference.conv1.weight)


def test_unknown_backbone_suggests_close_timm_names():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet181'.*resnet18"):
        TwoHeadModule(num_classes=5, backbone="resnet181", k=2)


def test_eval_ks_default_to_those_below_num_classes_plus_k():
    assert TwoHeadModule(num_classes=4, k=2.5).eval_ks == [1.0, 2.0, 2.5, 3.0]
    assert TwoHeadModule(num_classes=100, k=3, eval_ks=[2.5, 7]).eval_ks == [2.5, 3.0, 7.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0.5}, "`k` to be a number in \\[1, num_classes=10\\), or a list of them .*, but got 0.5"),
        ({"k": 0}, "`k` to be a number in \\[1, num_classes=10\\), or a list of them .*, but got 0"),
        ({"k": [2, 10]}, "`k` to be a number in \\[1, num_classes=10\\), or a list of them .*, but got \\[2, 10\\]"),
        ({"k": []}, "or a list of them .*, but got \\[\\]"),
        ({"k": [2, 2.0]}, "the K of argument `k` to be distinct, but got \\[2, 2.0\\]"),
        ({"k": [2, 3], "method": "softmax"}, "trains one multi-label head per K .* method='softmax' does not"),
        (
            {"k": [2, 3], "predict_k": 5, "predict_head": "multilabel"},
            "K=5 \\(argument `predict_k`\\) was not trained: .* serve K = 2, 3",
        ),
        ({"k": -2}, "but got -2"),
        ({"k": 10}, "but got 10"),
        ({"eval_ks": [1, 12]}, "`eval_ks` to be a number in \\(0, num_classes=10\\), but got 12"),
        ({"method": "an2"}, "`method` to be one of .*, but got .an2."),
        ({"mu": -1.0}, "`mu` to be >= 0"),
        ({"class_counts": [1, 2]}, "`class_counts` to have num_classes=10 entries, but got 2"),
    ],
)
def test_bad_module_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoHeadModule(num_classes=10, **{"k": 2, **kwargs})


def test_softmax_method_freezes_the_multilabel_head():
    model = TwoHeadModule(num_classes=5, method="softmax", k=2)
    assert not any(p.requires_grad for p in model.network.multilabel_head.parameters())
    assert model.loss.set_head == "softmax" and model.evaluation_heads == ["softmax"]


def test_two_head_loss_with_averaged_bce_by_hand_on_a_2x4_example():
    softmax_logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    multilabel_logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    target = torch.tensor([0, 3])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    # CE: sample 0: -log(e^2 / (e^2 + 3)) = log(1 + 3 e^-2); sample 1: log 4.
    ce = (torch.log(1 + 3 * torch.exp(torch.tensor(-2.0))) + torch.log(torch.tensor(4.0))) / 2
    # BCE: sample 0 has four logits 0: log 2 each; sample 1: -log(1 - s(1)) - log(1 - s(-1)) - log(1/2) - log(1/2)
    # = softplus(1) + softplus(-1) + 2 log 2; mean over the 8 entries.
    log2 = torch.log(torch.tensor(2.0))
    bce = (4 * log2 + F.softplus(torch.tensor(1.0)) + F.softplus(torch.tensor(-1.0)) + 2 * log2) / 8
    terms = TwoHeadLoss(mu=0.5, bce_reduction="mean")(softmax_logits, multilabel_logits, target, labels)
    assert terms["cross_entropy"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert terms["binary_cross_entropy"].item() == pytest.approx(bce.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx((ce + 0.5 * bce).item(), rel=1e-6)
    assert SoftmaxLoss()(softmax_logits, multilabel_logits, target)["loss"].item() == pytest.approx(ce.item())


def test_bce_is_averaged_over_classes_by_default_and_summed_on_request_by_hand():
    softmax_logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    multilabel_logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    target, labels = torch.tensor([0, 3]), torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    log2 = torch.log(torch.tensor(2.0))
    # Per sample, summed over the 4 classes: 4 log 2, and softplus(1) + softplus(-1) + 2 log 2; mean over samples.
    summed = (4 * log2 + F.softplus(torch.tensor(1.0)) + F.softplus(torch.tensor(-1.0)) + 2 * log2) / 2
    default = TwoHeadLoss(mu=0.5)(softmax_logits, multilabel_logits, target, labels)
    assert default["binary_cross_entropy"].item() == pytest.approx(summed.item() / 4, rel=1e-6)
    assert default["loss"].item() == pytest.approx((default["cross_entropy"] + 0.5 * summed / 4).item(), rel=1e-6)
    terms = TwoHeadLoss(mu=0.5, bce_reduction="sum")(softmax_logits, multilabel_logits, target, labels)
    assert terms["binary_cross_entropy"].item() == pytest.approx(summed.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx((terms["cross_entropy"] + 0.5 * summed).item(), rel=1e-6)
    assert TwoHeadModule(num_classes=4, k=2).loss.bce_reduction == "mean"


def test_warmup_epochs_train_cross_entropy_alone_then_add_the_multilabel_term():
    loss = TwoHeadLoss(mu=2.0, warmup_epochs=2)
    multilabel_logits = torch.randn(3, 5, requires_grad=True)
    softmax_logits, target = torch.randn(3, 5), torch.tensor([0, 1, 4])
    labels = F.one_hot(target, 5).float()
    for epoch, weight in ((0, 0.0), (1, 0.0), (2, 2.0)):
        loss.on_train_epoch_start(epoch)
        terms = loss(softmax_logits, multilabel_logits, target, labels)
        expected = terms["cross_entropy"] + weight * terms["binary_cross_entropy"]
        assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    loss.on_train_epoch_start(0)
    loss(softmax_logits, multilabel_logits, target, labels)["loss"].backward()
    assert torch.equal(multilabel_logits.grad, torch.zeros(3, 5))  # a zero gradient, not none (DDP needs one)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bce_reduction": "max"}, "`bce_reduction` to be 'mean' or 'sum', but got 'max'"),
        ({"warmup_epochs": -1}, "`warmup_epochs` to be an integer >= 0, but got -1"),
    ],
)
def test_bad_two_head_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        TwoHeadModule(num_classes=4, k=2, loss_options=options)


def test_pseudo_labels_carry_no_gradient_and_bce_reaches_the_softmax_head_only_through_the_backbone():
    torch.manual_seed(0)
    model = TwoHeadModule(num_classes=6, backbone="resnet18", k=2)
    images, target = torch.randn(8, 3, 32, 32), torch.randint(0, 6, (8,))
    softmax_logits, multilabel_logits = model(images)
    probs = softmax_logits.softmax(dim=1)
    labels = pseudo_labels(probs, target, batch_pseudo_label_threshold(probs, target, 2))
    assert not labels.requires_grad
    bce = build_loss("two_head", mu=1.0)(softmax_logits, multilabel_logits, target, labels)["binary_cross_entropy"]
    bce.backward()
    assert model.network.softmax_head.weight.grad is None  # BCE does not reach the softmax head directly
    assert model.network.multilabel_head.weight.grad.abs().sum() > 0
    assert model.network.backbone.conv1.weight.grad.abs().sum() > 0  # it reaches the shared backbone


def test_checkpoint_from_another_data_set_or_method_is_refused():
    model = TwoHeadModule(num_classes=5, k=2)
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="num_classes=5, but the model has num_classes=6"):
        TwoHeadModule(num_classes=6, k=2).on_load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="--model.init_args.method two_head"):
        TwoHeadModule(num_classes=5, k=2, method="softmax").on_load_checkpoint(checkpoint)
    named = TwoHeadModule(num_classes=3, k=2, class_names=["oak", "ash", "elm"])
    checkpoint = {"hyper_parameters": dict(named.hparams)}
    named.on_save_checkpoint(checkpoint)
    other = TwoHeadModule(num_classes=3, k=2, class_names=["oak", "yew", "elm"])
    with pytest.raises(ValueError, match="trained on other classes: class 1 is 'ash' there and 'yew' in this data set"):
        other.on_load_checkpoint(checkpoint)


@pytest.mark.parametrize(
    "saved, message",
    [
        ("resnet34", "does not match backbone 'resnet18' \\(unexpected: .*layer1.2"),
        ("junk", "does not match backbone 'resnet18' \\(missing: 120 \\(e.g. conv1.weight\\); unexpected: 1"),
    ],
)
def test_a_weights_file_of_another_backbone_is_refused(tmp_path, saved, message):
    path = tmp_path / "weights.pth"
    state = {"a": torch.zeros(3)} if saved == "junk" else timm.create_model(saved).state_dict()
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        TwoHeadModule(num_classes=5, backbone="resnet18", weights_path=str(path), k=2)


def test_pretrained_without_network_says_how_to_pass_a_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network, without the wait
    with pytest.raises(ValueError, match="Cannot download the pretrained weights of 'resnet18'.*weights_path PATH"):
        TwoHeadModule(num_classes=5, backbone="resnet18", pretrained=True, k=2)


def test_predict_head_names_its_choices_and_what_an_older_checkpoint_lacks():
    from avgk_lightning.errors import InvalidInputError
    from avgk_lightning.evaluation import Calibration

    with pytest.raises(InvalidInputError, match="`predict_head` to be 'validation' or 'multilabel' or 'softmax'"):
        TwoHeadModule(num_classes=5, k=2, predict_head="both")
    with pytest.raises(InvalidInputError, match="`predict_head` to be 'validation' or 'softmax', but got 'multilabel'"):
        TwoHeadModule(num_classes=5, k=2, method="softmax", predict_head="multilabel")  # a head it does not train
    model = TwoHeadModule(num_classes=5, k=2, predict_head="validation")
    images = torch.randn(3, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="No calibrated average-K thresholds"):
        model.predict_sets(images)
    # a checkpoint written before the validation accuracies were recorded: its thresholds only
    state = {"thresholds": {"multilabel": {2.0: 0.5}, "softmax": {2.0: 0.2}}}
    model.calibration.load_state_dict(state)
    assert model.calibration.accuracy == {} and model.calibration.state_dict()["validation_accuracy"] == {}
    lacking = "no validation average-K accuracy of the multilabel, softmax head at K=2"
    with pytest.raises(InvalidInputError, match=lacking):
        model.predict_sets(images)
    model.predict_head = "softmax"  # what the message says to do
    with torch.no_grad():
        expected = (model.eval().network.scores(images, ["softmax"])["softmax"] >= 0.2).tolist()
    expected_sets = [[j for j, kept in enumerate(row) if kept] for row in expected]
    assert [sorted(s) for s in model.predict_sets(images)] == expected_sets
    calibration = Calibration()
    calibration.load_state_dict({**state, "validation_accuracy": {"multilabel": {2.0: 0.7}, "softmax": {2.0: 0.7}}})
    assert calibration.better_head(["multilabel", "softmax"], 2) == "multilabel"  # a tie keeps the set head
    with pytest.raises(InvalidInputError, match="K=3 \\(argument `k`\\) was not calibrated"):
        calibration.better_head(["multilabel", "softmax"], 3, argument="k")


def test_export_leaves_the_callers_module_as_it_was(tmp_path):
    from avgk_lightning.export import export_set_predictor, load_set_predictor

    torch.manual_seed(0)
    model = TwoHeadModule(num_classes=5, k=2, backbone="small_vgg", predict_head="multilabel")
    model.calibration.average_k = {"multilabel": {2.0: 0.5}}
    model.train()
    model.network.softmax_head.eval()  # a user's frozen part keeps its own mode
    modes = {name: sub.training for name, sub in model.named_modules()}
    storage = {name: parameter.data_ptr() for name, parameter in model.named_parameters()}
    predictor_path = export_set_predictor(model, tmp_path / "p.pt", input_shape=(3, 28, 28))
    assert {name: sub.training for name, sub in model.named_modules()} == modes
    assert {name: parameter.data_ptr() for name, parameter in model.named_parameters()} == storage  # not moved
    predictor, _ = load_set_predictor(predictor_path)
    images = torch.randn(4, 3, 28, 28)
    model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model.network.multilabel_head(model.network.backbone(images)))
    assert torch.allclose(predictor(images)[0], expected, atol=1e-6)
