"""The embedded default data: small images with per-sample ambiguity and a long-tailed class prior."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from avgk_lightning.checks import check_integer, check_probability
from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.errors import InvalidInputError

_SPLIT_OFFSETS = {"train": 1, "val": 2, "test": 3}
_PIXEL_NOISE = 0.3  # the default of `pixel_noise`


def _pixel_noise(pixel_noise: float, noise: float | None) -> float:
    """`pixel_noise`, or the deprecated `noise` where that was given instead (a FutureWarning says so)."""
    if noise is None:
        return pixel_noise
    if pixel_noise != _PIXEL_NOISE:
        raise InvalidInputError(
            f"Got both `noise`={noise!r} and `pixel_noise`={pixel_noise!r}: `noise` is the deprecated name of "
            "`pixel_noise`. Pass `pixel_noise` alone."
        )
    warnings.warn(
        "SyntheticAmbiguityDataModule's argument `noise` (the pixel noise) is deprecated and will be removed: "
        "rename it `pixel_noise` (`--data.init_args.pixel_noise`); elsewhere `noise` is the label noise.",
        FutureWarning,
        stacklevel=3,
    )
    return noise


class SyntheticAmbiguityDataModule(AverageKDataModule):
    r"""Images generated on the fly from class prototypes, with known Bayes posteriors.

    Classes come in superclasses (``num_superclasses`` x ``classes_per_superclass``). Each class has a
    smooth random prototype image: its superclass's pattern plus a class-specific pattern scaled by
    ``sibling_distance`` (siblings look alike, as in fine-grained data). For every sample:

    1. an anchor class is drawn from a power-law prior (``p_c`` proportional to ``rank_c ** -power``,
       ranks shuffled across superclasses), so some classes are rare;
    2. with probability ``ambiguity`` the sample is ambiguous: it mixes the anchor with 1-4 of its
       siblings (2-5 classes in all) with Dirichlet(1) weights :math:`w`; otherwise :math:`w` is one-hot;
    3. a fraction ``label_noise`` of the mass is spread over all classes with Dirichlet(1) weights
       (every class keeps a small, sample-specific probability: no ties among the posteriors);
    4. the image is :math:`x = \sum_j w_j P_j + \sigma \varepsilon` and the label is drawn from
       :math:`w`.

    Since the image reveals :math:`w` up to the pixel noise (the prototypes are linearly independent),
    :math:`w` is, to that precision, the sample's Bayes posterior :math:`P(y \mid x)`. Batches are
    ``(images, targets, label_distributions)``; thresholding :math:`w` with the validation protocol
    gives the Bayes-oracle average-K accuracy, which the module reports beside its own. Everything is
    deterministic from ``seed`` and generated in memory: no files, no download.

    Args:
        num_superclasses: number of superclasses.
        classes_per_superclass: fine classes per superclass (the most siblings a sample can mix).
        image_size: side of the square RGB images.
        train_size: samples in the training split.
        val_size: samples in the validation split.
        test_size: samples in the test split.
        ambiguity: probability that a sample mixes several siblings, in [0, 1].
        power: exponent of the power-law class prior (0: balanced).
        sibling_distance: how far sibling prototypes are from their superclass pattern.
        pixel_noise: standard deviation of the pixel noise.
        label_noise: share of each posterior spread at random over all classes, in [0, 1].
        seed: seed of the prototypes and of every split.
        batch_size: samples per batch on each device.
        num_workers: data-loading worker processes per device (0: load in the main process).
        pin_memory: pin host memory for faster transfers (only where CUDA is available).
        persistent_workers: keep the worker processes between epochs (when `num_workers` > 0).
        noise: the former name of `pixel_noise` (everywhere else `noise` is label noise): deprecated.

    Example:
        >>> data = SyntheticAmbiguityDataModule(train_size=64, val_size=32, test_size=32)
        >>> data.setup("fit")
        >>> batch = next(iter(data.train_dataloader()))  # an avgk_lightning.batch.Batch
        >>> data.num_classes, tuple(batch.images.shape[1:]), bool(torch.allclose(batch.posteriors.sum(1), torch.ones(1)))
        (40, (3, 16, 16), True)
    """

    def __init__(
        self,
        num_superclasses: int = 8,
        classes_per_superclass: int = 5,
        image_size: int = 16,
        train_size: int = 10000,
        val_size: int = 2500,
        test_size: int = 2501,
        ambiguity: float = 0.5,
        power: float = 1.0,
        sibling_distance: float = 0.7,
        pixel_noise: float = _PIXEL_NOISE,
        label_noise: float = 0.05,
        seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        noise: float | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers)
        pixel_noise = _pixel_noise(pixel_noise, noise)
        for name, value in (("num_superclasses", num_superclasses), ("image_size", image_size)):
            check_integer(name, value)
        check_integer("classes_per_superclass", classes_per_superclass, minimum=2)
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            check_integer(name, value)
        check_probability("ambiguity", ambiguity)
        check_probability("label_noise", label_noise)
        for name, value in (("power", power), ("sibling_distance", sibling_distance), ("pixel_noise", pixel_noise)):
            if value < 0:
                raise InvalidInputError(f"Expected argument `{name}` to be >= 0, but got {value!r}")
        self.num_superclasses = num_superclasses
        self.classes_per_superclass = classes_per_superclass
        self.image_size = image_size
        self.split_sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.ambiguity = ambiguity
        self.power = power
        self.sibling_distance = sibling_distance
        self.pixel_noise = pixel_noise
        self.label_noise = label_noise
        self.seed = seed
        self.prototypes, self.class_prior = self._make_classes()
        self._splits: dict[str, TensorDataset] = {}

    @property
    def num_classes(self) -> int:
        return self.num_superclasses * self.classes_per_superclass

    @property
    def class_names(self) -> list[str]:
        per = self.classes_per_superclass
        return [f"superclass{c // per}/class{c % per}" for c in range(self.num_classes)]

    @property
    def class_counts(self) -> Tensor:
        targets = self._split("train").tensors[1]
        return torch.bincount(targets, minlength=self.num_classes)

    def _smooth_patterns(self, count: int, generator: torch.Generator) -> Tensor:
        coarse = torch.randn(count, 3, 4, 4, generator=generator)
        patterns = F.interpolate(coarse, size=self.image_size, mode="bilinear", align_corners=False)
        return patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    def _make_classes(self) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        superclass_patterns = self._smooth_patterns(self.num_superclasses, generator)
        class_patterns = self._smooth_patterns(self.num_classes, generator)
        superclass_of = torch.arange(self.num_classes) // self.classes_per_superclass
        prototypes = superclass_patterns[superclass_of] + self.sibling_distance * class_patterns
        ranks = torch.randperm(self.num_classes, generator=generator).double() + 1
        prior = ranks.pow(-self.power)
        return prototypes, (prior / prior.sum()).float()

    def _generate(self, split: str) -> TensorDataset:
        size = self.split_sizes[split]
        generator = torch.Generator().manual_seed(self.seed * 10 + _SPLIT_OFFSETS[split])
        per = self.classes_per_superclass
        anchors = torch.multinomial(self.class_prior, size, replacement=True, generator=generator)
        ambiguous = torch.rand(size, generator=generator) < self.ambiguity
        # Siblings: 2..min(5, per) classes of the anchor's superclass, the anchor always among them.
        max_mix = min(5, per)
        mix_sizes = torch.randint(2, max_mix + 1, (size,), generator=generator)
        order = torch.rand(size, per, generator=generator).argsort(dim=1)
        anchor_slot = anchors % per
        order = torch.where(order == anchor_slot.unsqueeze(1), order[:, :1], order)
        order[:, 0] = anchor_slot
        members = torch.arange(per).unsqueeze(0) < mix_sizes.unsqueeze(1)
        gamma = -torch.log(torch.rand(size, per, generator=generator).clamp_min(1e-12))  # Exp(1) draws
        mixed = gamma * members / (gamma * members).sum(dim=1, keepdim=True)  # Dirichlet(1) on the members
        pure = F.one_hot(torch.zeros(size, dtype=torch.long), per).float()  # all weight on the anchor slot
        weights = torch.where(ambiguous.unsqueeze(1), mixed, pure)
        posteriors = torch.zeros(size, self.num_classes)
        posteriors.scatter_(1, (anchors // per * per).unsqueeze(1) + order, weights)
        background = -torch.log(torch.rand(size, self.num_classes, generator=generator).clamp_min(1e-12))
        background = background / background.sum(dim=1, keepdim=True)  # Dirichlet(1) over all classes
        posteriors = (1 - self.label_noise) * posteriors + self.label_noise * background
        targets = torch.multinomial(posteriors, 1, generator=generator).squeeze(1)
        images = (posteriors @ self.prototypes.flatten(1)).view(size, 3, self.image_size, self.image_size)
        images = images + self.pixel_noise * torch.randn(images.shape, generator=generator)
        return TensorDataset(images, targets, posteriors)

    def _split(self, split: str) -> TensorDataset:
        if split not in self._splits:
            self._splits[split] = self._generate(split)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        self.train_dataset = self._split("train")
        self.val_dataset = self._split("val")
        self.test_dataset = self._split("test")
