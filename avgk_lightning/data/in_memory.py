"""The base of data sets held in memory (CIFAR-100, Fashion-MNIST): split, label noise, long tail, predict folder."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from avgk_lightning.checks import check_integer, check_probability
from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.data.folder import ImageFileDataset, list_images
from avgk_lightning.data.label_noise import report_label_noise, superclass_label_noise
from avgk_lightning.errors import InvalidInputError

__all__ = ["ImageArrays", "InMemoryDataModule", "UInt8ImageDataset"]


@dataclass(frozen=True)
class ImageArrays:
    """A data set's official training and test sets as uint8 image tensors and int64 labels, with its classes.

    `superclass_of` maps each class to its superclass (the label noise stays inside it); `source` is the
    file of the training set, named in messages.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: tuple[str, ...]
    superclass_of: Tensor
    source: Path


class UInt8ImageDataset(Dataset):
    """(image, label) pairs from uint8 images, through `transform` where one is given (else as stored).

    Example:
        >>> data = UInt8ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([3, 1]))
        >>> image, label = data[1]
        >>> tuple(image.shape), int(label)
        ((1, 4, 4), 1)
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.labels[index]


class InMemoryDataModule(AverageKDataModule):
    """A data set read once into memory, with the protocol of the paper's CIFAR-100 experiments.

    * Split: ``val_size`` images of the official training set, drawn with ``split_seed``, form the
      validation split; of the rest, ``train_size`` images (the same number per class; default all)
      form the training split. The official test set is untouched.
    * Label noise: each training label is, with probability ``noise``, replaced by another class of its
      superclass, drawn with ``noise_seed`` (:meth:`noisy_labels`; subclasses may offer other rules).
      Validation and test labels stay clean. The realised rate is logged, ``noisy_indices`` /
      ``clean_train_labels`` record the changes, and ``label_noise.json`` in the run directory lists them.
    * Long tail (``imbalance`` = r > 1): after the noise, the training split is subsampled so that, with
      the classes ranked in an order drawn with ``imbalance_seed``, class of rank i keeps
      ``n_max · r^(-i/(L-1))`` images by their training labels (n_max the smallest class size before
      subsampling): the most and least frequent class differ by r. Validation and test stay balanced.
    * ``predict_dir``: a folder of images (searched recursively) for ``predict``, through
      :meth:`predict_transform`; default the test split.

    Subclasses read their files in :meth:`read_arrays` and say how samples become tensors in
    :meth:`make_dataset` and :meth:`predict_transform`.
    """

    #: The data set's name in messages ("CIFAR-100").
    data_set_name = "in-memory data set"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        noise: float,
        imbalance: float,
        val_size: int,
        train_size: int | None,
        split_seed: int,
        noise_seed: int,
        imbalance_seed: int,
        augment: bool,
        predict_dir: str | os.PathLike | None,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers)
        check_probability("noise", noise)
        if (
            isinstance(imbalance, bool)
            or not isinstance(imbalance, (int, float))
            or not (imbalance == 0 or imbalance >= 1)
        ):
            raise InvalidInputError(
                f"Expected argument `imbalance` to be 0 (balanced) or a ratio >= 1, but got {imbalance!r}"
            )
        check_integer("val_size", val_size)
        if train_size is not None:
            check_integer("train_size", train_size)
        self.data_dir = Path(data_dir).expanduser()
        self.noise = float(noise)
        self.imbalance = float(imbalance)
        self.val_size = val_size
        self.train_size = train_size
        self.split_seed = split_seed
        self.noise_seed = noise_seed
        self.imbalance_seed = imbalance_seed
        self.augment = augment
        self.predict_dir = None if predict_dir is None else Path(predict_dir).expanduser()
        self._arrays: ImageArrays | None = None
        self.noisy_indices: Tensor | None = None
        self.clean_train_labels: Tensor | None = None
        self.realised_noise_rate: float | None = None

    @abstractmethod
    def read_arrays(self) -> ImageArrays:
        """Read the data set's files (called once, by :meth:`arrays`); a clear error for a missing or bad file."""

    @abstractmethod
    def make_dataset(self, images: Tensor, labels: Tensor, train: bool) -> Dataset:
        """The dataset of one split from its uint8 images and labels (`train`: the training split)."""

    @abstractmethod
    def predict_transform(self) -> Callable[[Any], Tensor]:
        """What turns a PIL image of ``predict_dir`` into a sample of the data set."""

    def arrays(self) -> ImageArrays:
        """The official training and test sets, read at the first call."""
        if self._arrays is None:
            self._arrays = self.read_arrays()
        return self._arrays

    @property
    def class_counts(self) -> Tensor:
        self._prepare_splits()
        return torch.bincount(self.train_dataset.labels, minlength=self.num_classes)

    def noisy_labels(self, labels: Tensor, pool: Tensor) -> Tensor:
        """The training labels of the samples `pool` of the official training set (`labels`), after the label noise."""
        return superclass_label_noise(labels[pool], self.arrays().superclass_of, self.noise, self.noise_seed)

    def noise_record(self) -> dict[str, Any]:
        """The settings saved in ``label_noise.json`` beside the changed labels."""
        return {
            "requested_noise": self.noise,
            "noise_seed": self.noise_seed,
            "split_seed": self.split_seed,
            "imbalance": self.imbalance,
            "imbalance_seed": self.imbalance_seed,
            "train_class_counts": self.class_counts.tolist(),
        }

    def long_tail_counts(self, available: Tensor) -> Tensor:
        """Training images per class under the long tail, given the images `available` per class.

        Example:
            >>> from avgk_lightning.data import FashionMNISTDataModule
            >>> data = FashionMNISTDataModule("unused", imbalance=10, imbalance_seed=0)
            >>> counts = data.long_tail_counts(torch.full((10,), 1000))
            >>> int(counts.max()), int(counts.min())
            (1000, 100)
        """
        rank = torch.randperm(self.num_classes, generator=torch.Generator().manual_seed(self.imbalance_seed))
        largest = int(available.min())
        profile = largest * self.imbalance ** (-rank.double() / (self.num_classes - 1))
        return profile.round().long().clamp_min(1)

    def _balanced_subset(self, pool: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """`train_size` indices of `pool`, the same number per class (the first classes take the remainder)."""
        quotas = torch.full((self.num_classes,), self.train_size // self.num_classes)
        quotas[: self.train_size % self.num_classes] += 1
        available = torch.bincount(labels[pool], minlength=self.num_classes)
        short = torch.nonzero(available < quotas).flatten()
        if len(short):
            label = int(short[0])
            raise InvalidInputError(
                f"Argument `train_size`={self.train_size} asks for {int(quotas[label])} training images of class "
                f"{self.class_names[label]!r}, but the training split holds only {int(available[label])} (after "
                f"the {self.val_size} validation images): pass a smaller `train_size`."
            )
        return _per_class_subset(pool, labels, quotas, generator)

    def _prepare_splits(self) -> None:
        if self.train_dataset is not None:
            return
        arrays = self.arrays()
        images, labels = arrays.train_images, arrays.train_labels
        if self.val_size >= len(labels):
            raise InvalidInputError(
                f"Expected argument `val_size` ({self.val_size}) to be smaller than the {len(labels)} images of "
                f"{arrays.source}"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(labels), generator=generator)
        val_index, pool = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        if self.train_size is not None:
            pool = self._balanced_subset(pool, labels, generator)
        noisy_pool = self.noisy_labels(labels, pool)
        if self.imbalance:
            quotas = self.long_tail_counts(torch.bincount(noisy_pool, minlength=self.num_classes))
            kept = _per_class_subset(torch.arange(len(pool)), noisy_pool, quotas, generator)
            pool, noisy_pool = pool[kept], noisy_pool[kept]
        clean = labels[pool]
        self.clean_train_labels = clean
        self.noisy_indices = torch.nonzero(noisy_pool != clean).flatten()
        self.realised_noise_rate = len(self.noisy_indices) / len(clean)
        self.train_dataset = self.make_dataset(images[pool], noisy_pool, train=True)
        self.val_dataset = self.make_dataset(images[val_index], labels[val_index], train=False)
        self.test_dataset = self.make_dataset(arrays.test_images, arrays.test_labels, train=False)

    def setup(self, stage: str | None = None) -> None:
        self._prepare_splits()
        if stage in (None, "fit"):
            report_label_noise(
                self.trainer,
                self.data_set_name,
                self.clean_train_labels,
                self.train_dataset.labels,
                self.noise_record(),
            )
        if stage in (None, "predict") and self.predict_dir is not None:
            self.predict_dataset = ImageFileDataset(list_images(self.predict_dir), None, self.predict_transform())


def _per_class_subset(pool: Tensor, labels: Tensor, quotas: Tensor, generator: torch.Generator) -> Tensor:
    """The first ``quotas[c]`` entries of class c of `pool` in a random order, sorted back."""
    shuffled = pool[torch.randperm(len(pool), generator=generator)]
    kept = [shuffled[labels[shuffled] == label][:quota] for label, quota in enumerate(quotas.tolist())]
    return torch.cat(kept).sort().values
