"""Fashion-MNIST from the four official idx files, with the CIFAR-100 protocol: superclass label noise, long tail."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from avgk_lightning.checks import check_integer
from avgk_lightning.data.in_memory import ImageArrays, InMemoryDataModule, UInt8ImageDataset
from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = ["FashionMNISTDataModule"]

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Superclasses of the label noise: tops (0), trousers (1), footwear (2), bags (3).
SUPERCLASS_OF = (0, 1, 0, 0, 0, 2, 0, 2, 3, 2)
SUPERCLASS_NAMES = ("tops", "trousers", "footwear", "bags")
# Pixel mean and standard deviation of the 60,000 official training images.
MEAN, STD = 0.2860, 0.3530
SIDE = 28
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
_HOW_TO_GET = (
    f"Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; they land in {DEBIAN_FOLDER}), "
    "or download the four files from https://github.com/zalandoresearch/fashion-mnist (data/fashion/), "
    "or pass `download=True` where this machine has internet"
)


def _read_idx(path: Path, dimensions: int) -> np.ndarray:
    """The uint8 array of an idx file (``.gz`` or not), checked against its own header."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            content = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise InvalidInputError(
            f"Cannot read {path}: {error}. The file is truncated or corrupt: get it again. {_HOW_TO_GET}."
        ) from error
    header = 4 + 4 * dimensions
    if len(content) < header or content[:2] != b"\x00\x00" or content[2] != 0x08 or content[3] != dimensions:
        raise InvalidInputError(
            f"{path} is not an idx file of unsigned bytes with {dimensions} dimension(s) (its first bytes are "
            f"{content[:4].hex()}, expected 000008{dimensions:02x}): pass the official Fashion-MNIST files."
        )
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    expected = int(np.prod(shape))
    if len(content) - header != expected:
        raise InvalidInputError(
            f"{path} is truncated: its header announces {'x'.join(map(str, shape))} values but it holds "
            f"{len(content) - header} bytes of data. Get the file again. {_HOW_TO_GET}."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def random_crop_and_flip(images: Tensor, padding: int) -> Tensor:
    """Random crops of each image's side from its zero-padded copy, each mirrored with probability 1/2.

    One gather for the whole (B, C, H, W) batch: the crop offsets and the mirror choice of each image
    are drawn from the global random generator on the images' device.

    Example:
        >>> images = torch.arange(16.0).view(1, 1, 4, 4)
        >>> out = random_crop_and_flip(images, padding=0)  # no padding: the image itself, mirrored or not
        >>> torch.equal(out, images) or torch.equal(out, images.flip(-1))
        True
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), device=device)
    mirror = torch.rand(batch, 1, device=device) < 0.5
    rows = top + torch.arange(height, device=device)
    columns = left + torch.where(
        mirror, torch.arange(width - 1, -1, -1, device=device), torch.arange(width, device=device)
    )
    index = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    channel = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return padded[index, channel, rows.view(batch, 1, height, 1), columns.view(batch, 1, 1, width)]


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST with the CIFAR-100 protocol of the paper: label noise inside superclasses, optional long tail.

    Reads the four official idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped or not) from ``data_dir`` or from
    torchvision's layout ``data_dir/FashionMNIST/raw``. They are decoded once into uint8 tensors; the
    loaders only index them, and the batch is converted, augmented and normalised in one step on the
    device (:meth:`on_after_batch_transfer`), so data loading costs next to nothing.

    Split, label noise, long tail and predict folder follow :class:`~avgk_lightning.data.in_memory.InMemoryDataModule`
    (the official test set: 10,000 images). The label noise stays inside the superclasses tops (T-shirt/top,
    Pullover, Dress, Coat, Shirt) and footwear (Sandal, Sneaker, Ankle boot); Trouser and Bag are alone and
    never change, so the realised rate is about 0.8 · ``noise``.

    * Images: 28x28, replicated to ``channels`` (3 by default, for any timm backbone) and normalised
      with the training-set mean 0.2860 and standard deviation 0.3530. Training augmentation
      (``augment``): a random 28x28 crop of the image padded with ``padding`` black pixels, and a
      horizontal flip with probability 1/2.

    Args:
        data_dir: folder of the four files, or holding ``FashionMNIST/raw/`` with them.
        noise: probability of replacing a training label by another class of its superclass, in [0, 1].
        imbalance: ratio r of the largest to the smallest training class (0: keep the data balanced).
        val_size: images of the official training set held out for validation.
        train_size: training images kept (divided equally among classes); default all the others.
        split_seed: seed of the train/val split and of the subsampling.
        noise_seed: seed of the label noise.
        imbalance_seed: seed of the order of the classes in the long tail.
        augment: random crops and flips for training.
        padding: pixels of padding of the random crops.
        channels: channels of the images given to the network (1 or 3).
        download: fetch the files with torchvision into ``data_dir/FashionMNIST/raw`` (needs internet).
        predict_dir: a folder of images (any size, searched recursively) for ``predict``, converted to
            grey and resized to 28x28 (light articles on a black background, as in Fashion-MNIST);
            default the test split.
        batch_size: samples per batch on each device.
        num_workers: data-loading worker processes per device (0: load in the main process).
        pin_memory: pin host memory for faster transfers (only where CUDA is available).
        persistent_workers: keep the worker processes between epochs (when `num_workers` > 0).

    Example:
        >>> data = FashionMNISTDataModule(noise=0.4, imbalance=20)  # the files are read at setup
        >>> data.num_classes, data.class_names[:3]
        (10, ['T-shirt/top', 'Trouser', 'Pullover'])
        >>> data.setup("fit")  # needs the four files in data_dir  # doctest: +SKIP
        >>> len(data.val_dataset), len(data.test_dataset)  # doctest: +SKIP
        (5000, 10000)
    """

    data_set_name = "Fashion-MNIST"

    def __init__(
        self,
        data_dir: str | os.PathLike = DEBIAN_FOLDER,
        noise: float = 0.0,
        imbalance: float = 0.0,
        val_size: int = 5000,
        train_size: int | None = None,
        split_seed: int = 0,
        noise_seed: int = 0,
        imbalance_seed: int = 0,
        augment: bool = True,
        padding: int = 2,
        channels: int = 3,
        download: bool = False,
        predict_dir: str | os.PathLike | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(
            data_dir,
            noise,
            imbalance,
            val_size,
            train_size,
            split_seed,
            noise_seed,
            imbalance_seed,
            augment,
            predict_dir,
            batch_size,
            num_workers,
            pin_memory,
            persistent_workers,
        )
        check_integer("padding", padding, minimum=0)
        if channels not in (1, 3):
            raise InvalidInputError(f"Expected argument `channels` to be 1 or 3, but got {channels!r}")
        self.padding = padding
        self.channels = channels
        self.download = download

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def _folders(self) -> list[Path]:
        return [self.data_dir, self.data_dir / "FashionMNIST" / "raw", self.data_dir / "raw"]

    @staticmethod
    def _find(folder: Path, name: str) -> Path | None:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _files(self) -> dict[str, Path]:
        found_per_folder = [
            {key: self._find(folder, name) for key, name in FILES.items()} for folder in self._folders()
        ]
        for found in found_per_folder:
            if all(found.values()):
                return found
        best = max(range(len(found_per_folder)), key=lambda i: sum(p is not None for p in found_per_folder[i].values()))
        folder = self._folders()[best]
        missing = [f"{FILES[key]}[.gz]" for key, path in found_per_folder[best].items() if path is None]
        others = ", ".join(str(other) for i, other in enumerate(self._folders()) if i != best)
        raise MissingFileError(
            f"Fashion-MNIST file(s) not found in {folder} (argument `data_dir`={self.data_dir}; also looked in "
            f"{others}): {', '.join(missing)}. {_HOW_TO_GET}."
        )

    def prepare_data(self) -> None:
        if self.download and not any(
            all(self._find(folder, name) for name in FILES.values()) for folder in self._folders()
        ):
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(self.data_dir), train=True, download=True)

    def read_arrays(self) -> ImageArrays:
        files = self._files()
        arrays = {}
        for split in ("train", "test"):
            images = _read_idx(files[f"{split}_images"], 3)
            labels = _read_idx(files[f"{split}_labels"], 1)
            if images.shape[1:] != (SIDE, SIDE):
                raise InvalidInputError(
                    f"{files[f'{split}_images']} holds {images.shape[1]}x{images.shape[2]} images, expected "
                    f"{SIDE}x{SIDE}: pass the Fashion-MNIST files."
                )
            if len(images) != len(labels):
                raise InvalidInputError(
                    f"{files[f'{split}_images']} holds {len(images)} images but {files[f'{split}_labels']} "
                    f"{len(labels)} labels: the two files do not belong together."
                )
            if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
                raise InvalidInputError(
                    f"{files[f'{split}_labels']} has label {int(labels.max())}; Fashion-MNIST labels are 0-9."
                )
            arrays[split] = (
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
            )
        return ImageArrays(
            *arrays["train"],
            *arrays["test"],
            class_names=CLASS_NAMES,
            superclass_of=torch.tensor(SUPERCLASS_OF),
            source=files["train_images"],
        )

    def make_dataset(self, images: Tensor, labels: Tensor, train: bool) -> UInt8ImageDataset:
        """uint8 images as stored: the batch is converted and augmented on the device (:meth:`prepare_images`)."""
        return UInt8ImageDataset(images, labels)

    def predict_transform(self) -> T.Compose:
        """Grey, resized and cropped to 28x28, uint8: then :meth:`prepare_images` as every batch."""
        return T.Compose([T.Grayscale(1), T.Resize(SIDE), T.CenterCrop(SIDE), T.PILToTensor()])

    def prepare_images(self, images: Tensor, augment: bool = False) -> Tensor:
        """uint8 (B, 1, 28, 28) images -> normalised float (B, `channels`, 28, 28), augmented if asked.

        What the network sees in training (``augment=True``, when the data module's `augment` is on)
        and in evaluation; use it on images given to :meth:`TwoHeadModule.predict_sets`.

        Example:
            >>> data = FashionMNISTDataModule("unused")
            >>> batch = data.prepare_images(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8))
            >>> tuple(batch.shape), round(float(batch[0, 0, 0, 0]), 4)  # (1 - 0.2860) / 0.3530
            ((2, 3, 28, 28), 2.0227)
        """
        images = images.float().div_(255)
        if augment and self.augment:
            images = random_crop_and_flip(images, self.padding)
        images = images.sub_(MEAN).div_(STD)
        return images.expand(-1, self.channels, -1, -1) if self.channels != images.shape[1] else images
