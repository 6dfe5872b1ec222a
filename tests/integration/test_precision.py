"""bf16 mixed precision (training follows float32; evaluation of the same weights gives float32's numbers within
bf16's rounding) and torch.compile (opt-in: the compiled backbone computes what the eager one does)."""

import contextlib

import numpy as np
import pytest
import torch

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from tests.helpers import TinyCNNModule, cpu_trainer


def _data(**sizes):
    return SyntheticAmbiguityDataModule(
        **{"train_size": 256, "val_size": 128, "test_size": 129, "batch_size": 64, **sizes}
    )


def _fit(model, data, precision="32-true", max_epochs=2):
    trainer = cpu_trainer(max_epochs=max_epochs, callbacks=[PseudoLabelThreshold()], precision=precision)
    trainer.fit(model, data)
    return dict(trainer.callback_metrics)


def _validate_and_test(model, data, precision):
    """`validate` (λ_K calibrated on the validation split) then `test` at one precision: the logged values."""
    trainer = cpu_trainer(precision=precision)
    trainer.validate(model, data, verbose=False)
    logged = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.test(model, data, verbose=False)
    return {**logged, **{name: float(value) for name, value in trainer.callback_metrics.items()}}


def _head_scores(model, loader, bf16):
    """Each evaluated head's scores over a loader in eval mode, under bf16 autocast (what Lightning's bf16-mixed
    does on CPU) or in float32; softmax / sigmoid of the logits in float32, as the evaluation computes them."""
    model.eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    scores, targets = {head: [] for head in model.evaluation_heads}, []
    with torch.no_grad(), autocast:
        for batch in loader:
            for head, head_scores in model.network.scores(batch.images, model.evaluation_heads).items():
                scores[head].append(head_scores)
            targets.append(batch.target)
    return {head: torch.cat(values).numpy() for head, values in scores.items()}, torch.cat(targets).numpy()


@pytest.mark.parametrize("method", ["two_head", "softmax"])
def test_bf16_mixed_precision(method):
    torch.manual_seed(0)
    metrics = _fit(TinyCNNModule(num_classes=40, k=2, method=method), _data(), precision="bf16-mixed")
    assert torch.isfinite(metrics["train/loss_epoch"])
    if method == "two_head":
        # The pseudo-labels are computed in float32 from the bf16 logits: their realised size follows the
        # same run in float32 (in 2 epochs of 4 steps it is still far from K, in both).
        torch.manual_seed(0)
        reference = _fit(TinyCNNModule(num_classes=40, k=2, method=method), _data())
        expected = reference["train/pseudo_label_set_size"].item()
        assert metrics["train/pseudo_label_set_size"].item() == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("method", ["two_head", "softmax"])
def test_bf16_evaluation_of_the_same_weights_matches_float32(method):
    """The same float32-trained weights validated and tested in 32-true and in bf16-mixed.

    Tolerances, from the scores themselves: with δ the largest |bf16 score - float32 score| (measured here on the
    same batches), every order statistic of the validation scores moves by at most δ_val, so λ_K (the mean of two
    of them) does too: |Δλ_K| <= δ_val. A test sample can only change sides of λ_K if its true class's float32
    score lies within δ_test + |Δλ_K| of λ_K, so |Δ avg-K accuracy| is at most the share of such samples; and,
    the practical claim, at most 0.02 (20 of the 1025 test samples; δ is about 0.007 on these weights, from bf16's
    8 significant bits on logits of up to about 9).
    """
    torch.manual_seed(0)
    data = _data(train_size=1024, val_size=512, test_size=1025)  # 4 epochs: scores spread out from uniform
    model = TinyCNNModule(num_classes=40, k=2, method=method)
    _fit(model, data, max_epochs=4)
    float32 = _validate_and_test(model, data, "32-true")
    bf16 = _validate_and_test(model, data, "bf16-mixed")
    loaders = {"val": data.val_dataloader(), "test": data.test_dataloader()}
    float32_scores = {split: _head_scores(model, loader, bf16=False)[0] for split, loader in loaders.items()}
    bf16_scores = {split: _head_scores(model, loader, bf16=True)[0] for split, loader in loaders.items()}
    target = _head_scores(model, loaders["test"], bf16=False)[1]
    checked = 0
    for head in model.evaluation_heads:
        prefix = "" if head == model.loss.set_head else f"{head}/"
        delta = {
            split: float(np.abs(bf16_scores[split][head] - float32_scores[split][head]).max()) for split in loaders
        }
        assert 0 < delta["val"] < 0.05 and 0 < delta["test"] < 0.05, delta  # bf16 really ran, and only rounded
        true_class = float32_scores["test"][head][np.arange(len(target)), target]
        for k in model.eval_ks:
            name = format(k, "g")
            lam, lam_bf16 = float32[f"val/{prefix}threshold@{name}"], bf16[f"val/{prefix}threshold@{name}"]
            assert abs(lam_bf16 - lam) <= delta["val"] + 1e-6, (head, k)
            assert bf16[f"test/{prefix}threshold@{name}"] == pytest.approx(lam_bf16, rel=1e-6)  # the λ_K it calibrated
            borderline = float(np.mean(np.abs(true_class - lam) <= delta["test"] + abs(lam_bf16 - lam) + 1e-6))
            accuracy, accuracy_bf16 = float32[f"test/{prefix}avgk_acc@{name}"], bf16[f"test/{prefix}avgk_acc@{name}"]
            assert abs(accuracy_bf16 - accuracy) <= min(borderline + 1e-6, 0.02), (head, k, borderline)
            checked += 1
    assert checked == len(model.evaluation_heads) * len(model.eval_ks) == len(model.evaluation_heads) * 5


@pytest.mark.slow
@pytest.mark.parametrize("method", ["two_head", "softmax"])
def test_compiled_backbone_trains_and_keeps_checkpoint_keys(method):
    torch.manual_seed(0)
    data = _data()
    model = TinyCNNModule(num_classes=40, k=2, method=method, compile=True)
    _fit(model, data)
    compiled = _validate_and_test(model, data, "32-true")
    assert model.network.backbone._compiled_call_impl is not None  # compiled in place
    eager = TinyCNNModule(num_classes=40, k=2, method=method)
    assert set(model.state_dict()) == set(eager.state_dict())
    # The same weights in an eager module compute the same scores, hence the same λ_K and accuracies: the
    # compiled graph may only reorder float operations (a flip of one of the 129 test samples at most).
    eager.load_state_dict(model.state_dict())
    images = data.test_dataset.tensors[0]
    with torch.no_grad():
        for compiled_logits, eager_logits in zip(model.eval()(images), eager.eval()(images)):
            torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-4, atol=1e-5)
    reference = _validate_and_test(eager, data, "32-true")
    for name in ("val/threshold@2", "test/threshold@2"):
        assert compiled[name] == pytest.approx(reference[name], rel=1e-4)
    for name in ("test/avgk_acc@2", "test/set_size@2", "test/avgk_acc@5"):
        assert compiled[name] == pytest.approx(reference[name], abs=1 / 129 + 1e-6), name
