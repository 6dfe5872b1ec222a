"""FashionMNISTDataModule on tiny files written in the official idx format (gzipped or not, both layouts)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avgk_lightning.data import FashionMNISTDataModule
from avgk_lightning.data.fashion_mnist import CLASS_NAMES, SUPERCLASS_OF, random_crop_and_flip
from avgk_lightning.data.label_noise import report_label_noise, superclass_label_noise
from tests.fixtures import write_fake_fashion_mnist, write_idx, write_image


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion")
    return folder, write_fake_fashion_mnist(folder)


def _module(folder, **kwargs):
    return FashionMNISTDataModule(folder, val_size=100, **kwargs)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_reads_the_official_files_in_both_layouts(tmp_path, compress, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = write_fake_fashion_mnist(folder, train_per_class=12, test_per_class=3, compress=compress)
    data = FashionMNISTDataModule(tmp_path, val_size=20)
    data.setup("fit")
    test_images, test_labels = arrays["test"]
    assert data.test_dataset.images.dtype == torch.uint8 and tuple(data.test_dataset.images.shape) == (30, 1, 28, 28)
    assert torch.equal(data.test_dataset.images[:, 0], torch.from_numpy(test_images))
    assert torch.equal(data.test_dataset.labels, torch.from_numpy(test_labels).long())
    assert (len(data.train_dataset), len(data.val_dataset)) == (100, 20)
    assert data.class_names == list(CLASS_NAMES) and data.num_classes == 10


def test_split_is_deterministic_and_validation_and_test_stay_clean(fashion):
    folder, arrays = fashion
    train_images, train_labels = arrays["train"]
    first, second = _module(folder, noise=0.5), _module(folder, noise=0.5)
    first.setup("fit")
    second.setup("fit")
    assert torch.equal(first.train_dataset.labels, second.train_dataset.labels)
    order = torch.randperm(600, generator=torch.Generator().manual_seed(0))
    val_index = order[:100].sort().values
    assert torch.equal(first.val_dataset.labels, torch.from_numpy(train_labels).long()[val_index])  # clean
    assert torch.equal(first.val_dataset.images[:, 0], torch.from_numpy(train_images)[val_index])
    assert torch.equal(first.test_dataset.labels, torch.from_numpy(arrays["test"][1]).long())  # untouched
    other = _module(folder, noise=0.5, split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.val_dataset.labels, first.val_dataset.labels)


def test_noise_stays_inside_the_superclass_and_never_touches_trouser_or_bag(fashion):
    folder, _ = fashion
    data = _module(folder, noise=1.0)
    data.setup("fit")
    noisy, clean = data.train_dataset.labels, data.clean_train_labels
    superclass = torch.tensor(SUPERCLASS_OF)
    assert torch.equal(superclass[noisy], superclass[clean])
    alone = (clean == CLASS_NAMES.index("Trouser")) | (clean == CLASS_NAMES.index("Bag"))
    assert torch.equal(noisy[alone], clean[alone]) and bool((noisy[~alone] != clean[~alone]).all())
    assert torch.equal(data.noisy_indices, torch.nonzero(noisy != clean).flatten())
    assert data.realised_noise_rate == pytest.approx(float((~alone).float().mean()))


def test_realised_rate_is_eight_tenths_of_the_requested_one_on_balanced_labels():
    labels = torch.arange(10).repeat(3000)
    noisy = superclass_label_noise(labels, torch.tensor(SUPERCLASS_OF), 0.4, seed=0)
    rate = (noisy != labels).float().mean().item()
    assert abs(rate - 0.32) < 4 * (0.32 * 0.68 / len(labels)) ** 0.5


def test_shared_noise_rule_matches_a_loop_over_the_siblings():
    generator = torch.Generator().manual_seed(3)
    superclass_of = torch.randperm(30, generator=generator) % 7
    labels = torch.randint(0, 30, (5000,), generator=generator)
    draws = torch.Generator().manual_seed(5)
    flip, pick = torch.rand(5000, generator=draws) < 0.3, torch.rand(5000, generator=draws)
    expected = labels.clone()
    for index in torch.nonzero(flip).flatten().tolist():
        label = int(labels[index])
        others = [c for c in range(30) if int(superclass_of[c]) == int(superclass_of[label]) and c != label]
        if others:
            expected[index] = others[int(pick[index] * len(others))]
    assert torch.equal(superclass_label_noise(labels, superclass_of, 0.3, seed=5), expected)


def test_train_size_keeps_the_same_number_per_class(fashion):
    folder, _ = fashion
    data = _module(folder, train_size=200)
    data.setup("fit")
    assert data.class_counts.tolist() == [20] * 10 and len(data.val_dataset) == 100


def test_long_tail_follows_the_exponential_profile_and_leaves_val_and_test_balanced(fashion):
    folder, _ = fashion
    balanced = _module(folder)
    balanced.setup("fit")
    data = _module(folder, imbalance=10, imbalance_seed=4)
    data.setup("fit")
    available = balanced.class_counts
    rank = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    expected = [max(1, round(int(available.min()) * 10 ** (-int(r) / 9))) for r in rank]
    assert data.class_counts.tolist() == expected
    assert max(expected) / min(expected) == pytest.approx(10, rel=0.1)
    assert torch.equal(data.val_dataset.labels, balanced.val_dataset.labels)
    assert torch.bincount(data.test_dataset.labels).tolist() == [5] * 10
    other = _module(folder, imbalance=10, imbalance_seed=5)
    other.setup("fit")
    assert other.class_counts.tolist() != expected


def test_label_noise_record_lists_every_changed_label(fashion, tmp_path):
    folder, _ = fashion
    data = _module(folder, noise=0.4, imbalance=5)
    data.setup("fit")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], default_root_dir=str(tmp_path))
    report_label_noise(trainer, "Fashion-MNIST", data.clean_train_labels, data.train_dataset.labels, {"noise": 0.4})
    record = json.loads((tmp_path / "label_noise.json").read_text())
    assert record["train_index_of_changed_labels"] == data.noisy_indices.tolist()
    assert record["noisy_labels"] == data.train_dataset.labels[data.noisy_indices].tolist()
    assert record["realised_noise_rate"] == pytest.approx(data.realised_noise_rate)
    with pytest.warns(UserWarning, match="label_noise.json exists already .*: not overwritten"):
        report_label_noise(trainer, "Fashion-MNIST", data.clean_train_labels, data.clean_train_labels, {})
    assert json.loads((tmp_path / "label_noise.json").read_text()) == record  # never overwritten


def test_random_crop_and_flip_matches_per_image_crops_of_the_padded_image():
    images = torch.rand(6, 1, 28, 28)
    torch.manual_seed(7)
    augmented = random_crop_and_flip(images, padding=3)
    torch.manual_seed(7)
    top, left = torch.randint(0, 7, (6, 1)), torch.randint(0, 7, (6, 1))
    mirror = torch.rand(6, 1) < 0.5
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    for i in range(6):
        crop = padded[i, :, top[i, 0] : top[i, 0] + 28, left[i, 0] : left[i, 0] + 28]
        assert torch.equal(augmented[i], crop.flip(-1) if mirror[i, 0] else crop)
    assert 0 < int(mirror.sum()) < 6  # both branches were checked


def test_batches_are_normalised_on_the_device_and_augmented_in_training_only(fashion):
    folder, _ = fashion
    data = _module(folder, padding=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    images, labels = batch.images, batch.target
    assert images.dtype == torch.uint8  # the loader only indexes
    data.trainer = SimpleNamespace(training=False)
    evaluated = data.on_after_batch_transfer(batch, 0)
    expected = ((images.float() / 255 - 0.2860) / 0.3530).expand(-1, 3, -1, -1)
    assert torch.allclose(evaluated.images, expected, atol=1e-6) and evaluated.target is labels
    assert evaluated.index is batch.index
    data.trainer = SimpleNamespace(training=True)
    trained = data.on_after_batch_transfer(batch, 0).images
    assert trained.shape == evaluated.images.shape and not torch.equal(trained, evaluated.images)
    single = _module(folder, channels=1, augment=False)
    single.trainer = SimpleNamespace(training=True)
    assert torch.equal(single.on_after_batch_transfer([images, labels], 0).images, expected[:, :1])  # a plain tuple


def test_predict_dir_images_become_grey_28x28(fashion, tmp_path):
    folder, _ = fashion
    write_image(tmp_path / "new" / "photo.jpg", seed=3, size=(64, 48))
    data = _module(folder, predict_dir=tmp_path / "new")
    data.setup("predict")
    (image,) = data.predict_dataset[0]  # no label: the batch's target is None
    assert image.dtype == torch.uint8 and tuple(image.shape) == (1, 28, 28)


def test_missing_files_are_named_with_how_to_get_them(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8), compress=True)
    with pytest.raises(FileNotFoundError) as error:
        FashionMNISTDataModule(tmp_path).setup("fit")
    message = str(error.value)
    assert "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in message
    assert f"not found in {tmp_path} (argument `data_dir`" in message and "train-images" not in message.split(":")[1]
    assert "apt-get install dataset-fashion-mnist" in message and "zalandoresearch/fashion-mnist" in message


@pytest.mark.parametrize("compress", [True, False])
def test_a_truncated_file_is_named(tmp_path, compress):
    write_fake_fashion_mnist(tmp_path, train_per_class=12, test_per_class=3, compress=compress)
    path = tmp_path / ("t10k-images-idx3-ubyte.gz" if compress else "t10k-images-idx3-ubyte")
    path.write_bytes(path.read_bytes()[:-200])
    expected = "truncated or corrupt" if compress else "is truncated: its header announces 30x28x28 values"
    with pytest.raises(ValueError, match=expected) as error:
        FashionMNISTDataModule(tmp_path, val_size=20).setup("fit")
    assert str(path) in str(error.value) and "dataset-fashion-mnist" in str(error.value)


def test_a_file_of_another_format_is_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path, train_per_class=12, test_per_class=3, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(12))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte is not an idx file of unsigned bytes with 1"):
        FashionMNISTDataModule(tmp_path, val_size=20).setup("fit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise": 1.5}, "`noise` to be a probability in \\[0, 1\\], but got 1.5"),
        ({"imbalance": 0.5}, "`imbalance` to be 0 \\(balanced\\) or a ratio >= 1, but got 0.5"),
        ({"train_size": 0}, "`train_size` to be a positive integer"),
        ({"channels": 2}, "`channels` to be 1 or 3, but got 2"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FashionMNISTDataModule("anywhere", **kwargs)


def test_too_large_a_train_size_names_the_class_and_what_is_there(fashion):
    folder, _ = fashion
    with pytest.raises(ValueError, match="`train_size`=5000 asks for 500 training images of class 'T-shirt/top', but"):
        _module(folder, train_size=5000).setup("fit")
