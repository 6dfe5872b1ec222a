import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avgk_lightning.data import CIFAR100DataModule
from avgk_lightning.data.label_noise import reference_label_noise, superclass_label_noise
from tests.fixtures import write_fake_cifar100, write_image


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root)
    return root


def _files(cifar_dir):
    with open(cifar_dir / "cifar-100-python" / "train", "rb") as handle:
        train = pickle.load(handle, encoding="latin1")
    with open(cifar_dir / "cifar-100-python" / "test", "rb") as handle:
        test = pickle.load(handle, encoding="latin1")
    return train, test


def _module(cifar_dir, **kwargs):
    return CIFAR100DataModule(cifar_dir, verify_checksums=False, val_size=100, num_workers=0, **kwargs)


def test_split_sizes_and_clean_validation_and_test(cifar_dir):
    train, test = _files(cifar_dir)
    data = _module(cifar_dir, noise=0.4)
    data.setup("fit")
    assert (len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)) == (300, 100, 100)
    fine = torch.tensor(train["fine_labels"])
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    val_index = order[:100].sort().values
    assert torch.equal(data.val_dataset.labels, fine[val_index])  # clean
    assert torch.equal(data.test_dataset.labels, torch.tensor(test["fine_labels"]))  # untouched
    pixels = torch.tensor(train["data"][val_index[0].item()]).view(3, 32, 32)
    assert torch.equal(data.val_dataset.images[0], pixels)
    assert data.class_names[:2] == ["fine_0", "fine_1"] and data.num_classes == 100


def test_noise_stays_inside_the_superclass_and_is_recorded(cifar_dir):
    train, _ = _files(cifar_dir)
    coarse_of = {f: c for f, c in zip(train["fine_labels"], train["coarse_labels"])}
    data = _module(cifar_dir, noise=0.5)
    data.setup("fit")
    noisy, clean = data.train_dataset.labels, data.clean_train_labels
    changed = torch.nonzero(noisy != clean).flatten()
    assert torch.equal(changed, data.noisy_indices) and len(changed) > 0
    for index in changed.tolist():
        assert coarse_of[noisy[index].item()] == coarse_of[clean[index].item()]
    assert data.realised_noise_rate == len(changed) / 300


@pytest.mark.parametrize("noise", [0.1, 0.4])
def test_realised_rate_is_within_a_binomial_tolerance(noise):
    labels = torch.arange(100).repeat(200)  # 20,000 labels
    noisy = superclass_label_noise(labels, torch.arange(100) // 5, noise, seed=0)
    rate = (noisy != labels).float().mean().item()
    assert abs(rate - noise) < 4 * (noise * (1 - noise) / len(labels)) ** 0.5
    assert torch.equal(noisy // 5, labels // 5)


def test_zero_noise_changes_nothing(cifar_dir):
    data = _module(cifar_dir)
    data.setup("fit")
    assert data.realised_noise_rate == 0 and torch.equal(data.train_dataset.labels, data.clean_train_labels)


def test_split_and_noise_are_deterministic(cifar_dir):
    first, second, other = (
        _module(cifar_dir, noise=0.3),
        _module(cifar_dir, noise=0.3),
        _module(cifar_dir, noise=0.3, noise_seed=1),
    )
    for data in (first, second, other):
        data.setup("fit")
    assert torch.equal(first.train_dataset.labels, second.train_dataset.labels)
    assert torch.equal(first.train_dataset.images, second.train_dataset.images)
    assert not torch.equal(first.noisy_indices, other.noisy_indices)


def test_transforms_normalise_and_augment_training_only(cifar_dir):
    data = _module(cifar_dir)
    data.setup("fit")
    image, _ = data.val_dataset[0]
    raw = data.val_dataset.images[0].float() / 255
    mean = torch.tensor([125.3, 123.0, 113.9]).view(3, 1, 1) / 255
    std = torch.tensor([63.0, 62.1, 66.7]).view(3, 1, 1) / 255
    assert image.shape == (3, 32, 32) and torch.allclose(image, (raw - mean) / std, atol=1e-5)
    torch.manual_seed(0)
    crops = torch.stack([data.train_dataset[0][0] for _ in range(8)])
    assert crops.shape == (8, 3, 32, 32) and not all(torch.equal(crops[0], crop) for crop in crops[1:])


def test_checksums_are_verified_by_default(cifar_dir):
    with pytest.raises(ValueError, match="Checksum mismatch for .*cifar-100-python/train.*verify_checksums=False"):
        CIFAR100DataModule(cifar_dir, val_size=100).setup("fit")


def test_missing_files_say_where_they_go(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python/train.*extract it into.*download=True"):
        CIFAR100DataModule(tmp_path).setup("fit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise": 1.5}, "`noise` to be a probability in \\[0, 1\\], but got 1.5"),
        ({"noise": -0.1}, "but got -0.1"),
        ({"val_size": 0}, "`val_size` to be a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CIFAR100DataModule("anywhere", **kwargs)


def test_val_size_larger_than_the_training_set_is_refused(cifar_dir):
    with pytest.raises(ValueError, match="`val_size` \\(5000\\) to be smaller than the 400 images"):
        CIFAR100DataModule(cifar_dir, verify_checksums=False).setup("fit")


def test_predict_dir_images_are_resized_to_cifar_inputs(cifar_dir, tmp_path):
    write_image(tmp_path / "new" / "photo.jpg", seed=3, size=(64, 48))
    data = _module(cifar_dir, predict_dir=tmp_path / "new")
    data.setup("predict")
    (image,) = data.predict_dataset[0]  # no label: the batch's target is None
    assert image.shape == (3, 32, 32)
    batch = next(iter(data.predict_dataloader()))
    assert batch.target is None and batch.index.tolist() == [0]


def _numpy_reference_rule(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """garcinc/noised-topk's LabelNoise(k=5), written as that code draws: the global numpy generator after
    np.random.seed(seed), one np.random.choice(5) offset per label, then one np.random.binomial(1, p) per label."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        offsets = np.random.choice(5, size=len(labels))
        redrawn = np.random.binomial(1, noise, size=len(labels))
    finally:
        np.random.set_state(state)
    return np.array(
        [label - label % 5 + offset if flag else label for label, offset, flag in zip(labels, offsets, redrawn)]
    )


def test_reference_rule_gives_the_reference_code_labels_image_by_image(cifar_dir):
    train, _ = _files(cifar_dir)
    fine = np.array(train["fine_labels"])
    expected = _numpy_reference_rule(fine, noise=0.6, seed=7)  # over the whole file, in file order
    data = _module(cifar_dir, noise=0.6, noise_rule="reference", noise_seed=7)
    data.setup("fit")
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    train_index = order[100:].sort().values.numpy()
    assert data.train_dataset.labels.tolist() == expected[train_index].tolist()
    assert data.clean_train_labels.tolist() == fine[train_index].tolist()
    blocks = data.train_dataset.labels // 5
    assert torch.equal(blocks, data.clean_train_labels // 5)  # consecutive blocks, not the superclasses
    assert torch.equal(data.val_dataset.labels, torch.tensor(fine[order[:100].sort().values.numpy()]))  # clean


@pytest.mark.parametrize("noise", [0.1, 0.4])
def test_reference_rule_keeps_a_fifth_of_the_redrawn_labels(noise):
    labels = torch.arange(100).repeat(200)  # 20,000 labels
    noisy = reference_label_noise(labels, noise, seed=3)
    rate, expected = (noisy != labels).float().mean().item(), 0.8 * noise
    assert abs(rate - expected) < 4 * (expected * (1 - expected) / len(labels)) ** 0.5
    assert torch.equal(noisy // 5, labels // 5)


def test_noise_rule_is_checked_and_saved(cifar_dir, tmp_path):
    with pytest.raises(
        ValueError, match="Expected argument `noise_rule` to be 'superclass' or 'reference', but got 'block'"
    ):
        _module(cifar_dir, noise_rule="block")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], default_root_dir=str(tmp_path))
    data = _module(cifar_dir, noise=0.5, noise_rule="reference")
    data.trainer = trainer
    data.setup("fit")
    saved = json.loads((tmp_path / "label_noise.json").read_text())
    assert saved["noise_rule"] == "reference" and saved["requested_noise"] == 0.5
    assert saved["train_index_of_changed_labels"] == data.noisy_indices.tolist()
    assert saved["realised_noise_rate"] == pytest.approx(data.realised_noise_rate)


def test_train_size_and_long_tail_follow_the_in_memory_protocol(tmp_path):
    write_fake_cifar100(tmp_path, train_per_class=12)  # 1,200 images: 100 validation, 11 per class on average
    balanced = _module(tmp_path, train_size=500)
    balanced.setup("fit")
    assert balanced.class_counts.tolist() == [5] * 100
    data = _module(tmp_path, imbalance=5, imbalance_seed=2)
    data.setup("fit")
    available = _module(tmp_path).class_counts  # per class, before the long tail
    rank = torch.randperm(100, generator=torch.Generator().manual_seed(2))
    expected = [max(1, round(int(available.min()) * 5 ** (-int(r) / 99))) for r in rank]
    assert data.class_counts.tolist() == expected
    assert torch.equal(data.val_dataset.labels, balanced.val_dataset.labels)  # the split does not move
