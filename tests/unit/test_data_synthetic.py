import pytest
import torch

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.functional import average_k_accuracy, average_k_threshold, topk_accuracy


@pytest.fixture(scope="module")
def data():
    module = SyntheticAmbiguityDataModule(train_size=20000, val_size=4000, test_size=4001)
    module.setup("fit")
    return module


def test_generation_is_deterministic_from_the_seed():
    first = SyntheticAmbiguityDataModule(train_size=50, val_size=10, test_size=10, seed=3)
    second = SyntheticAmbiguityDataModule(train_size=50, val_size=10, test_size=10, seed=3)
    other = SyntheticAmbiguityDataModule(train_size=50, val_size=10, test_size=10, seed=4)
    for a, b in zip(first._split("train").tensors, second._split("train").tensors):
        assert torch.equal(a, b)
    assert not torch.equal(first._split("train").tensors[0], other._split("train").tensors[0])
    assert not torch.equal(first._split("val").tensors[0], first._split("test").tensors[0][:10])


def test_labels_are_drawn_from_the_posteriors(data):
    _, targets, posteriors = data.train_dataset.tensors
    assert torch.allclose(posteriors.sum(dim=1), torch.ones(len(targets)))
    assert (posteriors > 0).all()  # no ties at zero in the oracle scores
    empirical = torch.bincount(targets, minlength=40).float() / len(targets)
    assert torch.allclose(empirical, posteriors.mean(dim=0), atol=0.006)


def test_ambiguity_knob_sets_the_share_of_mixed_samples():
    for ambiguity in (0.0, 0.3, 0.8):
        module = SyntheticAmbiguityDataModule(train_size=5000, val_size=10, test_size=10, ambiguity=ambiguity)
        posteriors = module._split("train").tensors[2]
        mixed = (posteriors.max(dim=1).values < 1 - module.label_noise).float().mean().item()
        assert mixed == pytest.approx(ambiguity, abs=0.025)


def test_mixtures_stay_inside_one_superclass(data):
    posteriors = data.train_dataset.tensors[2]
    main = posteriors > data.label_noise  # weights above the background share
    superclasses = torch.arange(40) // 5
    for row in main[:500]:
        assert len(set(superclasses[row].tolist())) == 1
        assert 1 <= row.sum() <= 5


def test_class_frequencies_are_long_tailed(data):
    counts = data.class_counts.sort(descending=True).values
    assert counts.sum() == 20000
    assert counts[0] > 10 * counts[-1]


def test_oracle_average_k_beats_top_k(data):
    _, _, val_posteriors = data.val_dataset.tensors
    _, test_targets, test_posteriors = data.test_dataset.tensors
    for k in (2, 3):  # at K = 1 the two nearly coincide; the gap opens with K
        threshold = average_k_threshold(val_posteriors, k)
        average_k = average_k_accuracy(test_posteriors, test_targets, threshold).item()
        top_k = topk_accuracy(test_posteriors, test_targets, k).item()
        assert average_k > top_k + 0.015


def test_images_carry_the_class_signal(data):
    # a least-squares read-out of the posterior from the pixels is accurate: w is visible in the image
    images, _, posteriors = data.train_dataset.tensors
    design = images.flatten(1)[:5000]
    solution = torch.linalg.lstsq(design, posteriors[:5000]).solution
    test_images, _, test_posteriors = data.test_dataset.tensors
    residual = (test_images.flatten(1) @ solution - test_posteriors).pow(2).sum()
    total = (test_posteriors - test_posteriors.mean(dim=0)).pow(2).sum()
    assert 1 - residual / total > 0.8  # R^2 of the linear read-out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ambiguity": 1.5}, "`ambiguity` to be a probability in \\[0, 1\\], but got 1.5"),
        ({"label_noise": -0.1}, "`label_noise`"),
        ({"train_size": 0}, "`train_size` to be a positive integer"),
        ({"classes_per_superclass": 1}, "`classes_per_superclass` to be an integer >= 2, but got 1"),
        ({"batch_size": 0}, "`batch_size` to be a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticAmbiguityDataModule(**kwargs)


def test_the_former_name_of_the_pixel_noise_gives_the_same_data_with_a_deprecation_warning():
    sizes = {"train_size": 64, "val_size": 32, "test_size": 32}
    with pytest.warns(FutureWarning, match="`noise` \\(the pixel noise\\) is deprecated .* rename it `pixel_noise`"):
        former = SyntheticAmbiguityDataModule(noise=0.5, **sizes)
    current = SyntheticAmbiguityDataModule(pixel_noise=0.5, **sizes)
    former.setup("fit")
    current.setup("fit")
    assert former.pixel_noise == 0.5
    assert torch.equal(former.train_dataset.tensors[0], current.train_dataset.tensors[0])
    with pytest.raises(ValueError, match="both `noise`=0.5 and `pixel_noise`=0.1"):
        SyntheticAmbiguityDataModule(noise=0.5, pixel_noise=0.1)
