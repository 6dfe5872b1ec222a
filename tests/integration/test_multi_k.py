"""A multi-label head per K in training: each head's pseudo-labels average its K, one K trains as before, and the
sets of every trained K come from its own head, in the module, after a checkpoint and in the exports."""

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.export import export_set_predictor, load_set_predictor
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd


def _data():
    return SyntheticAmbiguityDataModule(train_size=600, val_size=101, test_size=101, batch_size=64)


def test_with_a_frozen_model_each_head_realises_its_k_in_the_next_epoch(tmp_path):
    model = TinyCNNModule(num_classes=40, k=[1.5, 3, 5], optimizer=frozen_sgd)
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold()], max_epochs=2)
    trainer.fit(model, _data())
    for k in (1.5, 3, 5):
        realised = trainer.callback_metrics[f"train/pseudo_label_set_size@{k:g}"].item()
        assert abs(realised - k) / k < 0.01, k
    assert "train/pseudo_label_set_size" not in trainer.callback_metrics


def _trained_weights(k, tmp_path):
    seed_everything(3)
    model = TinyCNNModule(num_classes=40, k=k)
    trainer = cpu_trainer(default_root_dir=tmp_path, callbacks=[PseudoLabelThreshold()], max_epochs=2)
    trainer.fit(model, _data())
    return model.state_dict(), dict(trainer.callback_metrics)


def test_a_list_of_one_k_trains_exactly_as_that_k(tmp_path):
    number, number_metrics = _trained_weights(2, tmp_path / "number")
    listed, listed_metrics = _trained_weights([2], tmp_path / "list")
    assert number.keys() == listed.keys()
    for name, value in number.items():
        assert torch.equal(value, listed[name]), name
    assert number_metrics.keys() == listed_metrics.keys()
    assert all(torch.equal(value, listed_metrics[name]) for name, value in number_metrics.items())


@pytest.fixture(scope="module")
def multi_k(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_k")
    seed_everything(0)
    data = SyntheticAmbiguityDataModule(train_size=512, val_size=128, test_size=129, batch_size=64)
    model = TinyCNNModule(num_classes=40, k=[1.5, 3], eval_ks=[1, 3])
    checkpoint = ModelCheckpoint(dirpath=root, filename="best", monitor="val/avgk_acc@1.5", mode="max")
    trainer = cpu_trainer(
        default_root_dir=root, callbacks=[PseudoLabelThreshold(), checkpoint], enable_checkpointing=True, max_epochs=1
    )
    trainer.fit(model, data)
    return root / "best.ckpt", data


def _images(data):
    return data.test_dataset.tensors[0][:48]


def _expected_sets(model, images, head, index, k):
    with torch.no_grad():
        scores = model.network.scores(images, [head])[head]
    scores = scores if index is None else scores[:, index]
    threshold = np.float32(model.calibration.average_k[head][k])
    return [np.flatnonzero(row >= threshold).tolist() for row in scores.numpy()]


def test_the_sets_of_each_trained_k_come_from_its_own_head_after_a_checkpoint(multi_k):
    path, data = multi_k
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["average_k"]["trained_ks"] == [1.5, 3.0] and saved["hyper_parameters"]["k"] == [1.5, 3]
    model = TinyCNNModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, predict_head="multilabel")
    model.eval()
    assert model.ks == (1.5, 3.0) and model.network.multilabel_head.weight.shape == (80, 16)
    assert sorted(model.calibration.average_k["multilabel"]) == [1.5, 3.0]
    images = _images(data)
    for index, k in enumerate((1.5, 3.0)):
        assert [sorted(s) for s in model.predict_sets(images, k=k)] == _expected_sets(
            model, images, "multilabel", index, k
        )
    with pytest.raises(ValueError, match="K=1 .* was not trained: this model's multi-label heads serve K = 1.5, 3"):
        model.predict_sets(images, k=1)


def test_other_ks_are_served_by_the_softmax_head_when_asked(multi_k):
    path, data = multi_k
    images = _images(data)
    softmax = TinyCNNModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, predict_head="softmax")
    assert [sorted(s) for s in softmax.eval().predict_sets(images, k=1)] == _expected_sets(
        softmax, images, "softmax", None, 1.0
    )
    chosen = TinyCNNModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, predict_head="validation")
    assert chosen.prediction_head(1.0) == "softmax"  # no multi-label head was trained for K = 1
    accuracy = chosen.calibration.accuracy
    better = "softmax" if accuracy["softmax"][3.0] > accuracy["multilabel"][3.0] else "multilabel"
    assert chosen.prediction_head(3.0) == better


def test_the_export_of_a_trained_k_holds_its_head_and_refuses_another(multi_k, tmp_path):
    path, data = multi_k
    model = TinyCNNModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, predict_head="multilabel")
    model.eval()
    images = _images(data)
    output = export_set_predictor(model, tmp_path / "k3.pt", k=3, input_shape=(3, 16, 16))
    predictor, metadata = load_set_predictor(output)
    scores, sets = predictor(images)
    assert metadata["k"] == 3.0 and metadata["threshold"] == model.calibration.average_k["multilabel"][3.0]
    with torch.no_grad():
        torch.testing.assert_close(scores, model.network.scores(images, ["multilabel"])["multilabel"][:, 1])
    assert [row.nonzero().flatten().tolist() for row in sets] == _expected_sets(model, images, "multilabel", 1, 3.0)
    with pytest.raises(ValueError, match="K=1 \\(argument `--k`\\) was not trained"):
        export_set_predictor(model, tmp_path / "k1.pt", k=1, input_shape=(3, 16, 16))


def test_a_multi_k_checkpoint_is_refused_by_a_model_of_other_ks(multi_k):
    path, _ = multi_k
    with pytest.raises(ValueError, match="a multi-label head for each K = 1.5, 3, but the model asks for K = 2"):
        TinyCNNModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, k=2)
