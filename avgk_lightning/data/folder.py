"""Image folders: ``train/``, ``val/``, ``test/`` with one sub-folder per class, the way users bring data."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from avgk_lightning.checks import check_choice, check_integer
from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.data.decode import ResizeCrop, read_rgb
from avgk_lightning.data.image_scan import scan_images
from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = [
    "DECODERS",
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "imagenet_normalize",
    "list_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")
DECODERS = ("draft", "pil")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path, argument: str = "predict_dir") -> list[Path]:
    """Every image file under `folder` (recursively), sorted; an error naming `argument` if there is none."""
    if not folder.is_dir():
        raise MissingFileError(f"Image folder not found: {folder} (argument `{argument}`)")
    paths = sorted(path for path in folder.rglob("*") if path.is_file() and _is_image(path))
    if not paths:
        raise InvalidInputError(
            f"No images in {folder} (argument `{argument}`; extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return paths


def imagenet_normalize(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) crops -> float32 with the ImageNet normalisation (what ``T.ToTensor`` + ``T.Normalize`` give).

    Example:
        >>> batch = imagenet_normalize(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8))
        >>> batch.dtype, round(float(batch[0, 0, 0, 0]), 4)  # (1 - 0.485) / 0.229
        (torch.float32, 2.2489)
    """
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


class ImageFileDataset(Dataset):
    """(image, label) pairs read from files; with ``labels=None`` items are (image,) (prediction).

    `draft_size`: decode JPEGs at a reduced scale that keeps the shorter side >= it (see :func:`read_rgb`).
    `skip_corrupt`: an image that cannot be read (one that broke after the set-up scan) is replaced by the
    next readable image of the dataset, with a warning naming it; :attr:`replaced` counts them, across
    data-loading workers. Without it, the error names the file.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | None,
        transform: Callable,
        draft_size: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform
        self.draft_size = draft_size
        self.skip_corrupt = skip_corrupt
        self._replaced = torch.zeros((), dtype=torch.long).share_memory_()  # the workers add to it

    @property
    def replaced(self) -> int:
        """How many reads of an unreadable image were replaced by the next image (``skip_corrupt``)."""
        return int(self._replaced)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> tuple[int, Image.Image]:
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            try:
                return candidate, read_rgb(self.paths[candidate], self.draft_size)
            except InvalidInputError as error:
                if not self.skip_corrupt:
                    raise
                self._replaced += 1
                warnings.warn(
                    f"skip_corrupt: {self.paths[candidate]} became unreadable after the set-up scan "
                    f"({error.__cause__}); replaced by the next image of the split",
                    stacklevel=2,
                )
        raise InvalidInputError(f"skip_corrupt: every image of the split is unreadable, e.g. {self.paths[index]}")

    def __getitem__(self, index: int) -> tuple[Tensor] | tuple[Tensor, Tensor]:
        index, image = self._read(index)
        image = self.transform(image)
        return (image,) if self.labels is None else (image, self.labels[index])


class ImageFolderDataModule(AverageKDataModule):
    """Any ``data_dir/{train,val,test}/<class>/<image>`` tree; class indices come from the training split.

    Classes are the sub-folders of ``train/`` in sorted order (override :meth:`_class_folders` for
    another order, as :class:`~avgk_lightning.data.PlantNet300KDataModule` does). A class may be absent
    from ``val/`` or ``test/``; a class folder there that ``train/`` lacks is an error naming it.

    Transforms: the reference recipe of the Pl@ntNet-300K code (train ``Resize(resize_size)`` +
    ``RandomCrop(image_size)``; evaluation ``Resize(resize_size)`` + ``CenterCrop(image_size)``;
    ImageNet normalisation), or, with ``transforms_from_model="resnet50.tv_in1k"``, the data config of
    that timm model (its input size, interpolation, crop and normalisation).

    Input pipeline of the reference transforms (``transforms_from_model`` keeps timm's: full decode,
    float32): the resize and the crop are one resample of the crop's box
    (:class:`~avgk_lightning.data.decode.ResizeCrop`: the same geometry, filter and random draws), JPEGs
    are decoded at a reduced DCT scale (``decode``), and the crops stay uint8 until the device
    (``uint8_batches``, :meth:`prepare_images`). What each gains: ``benchmarks/input_pipeline.py``, docs/data.md.

    Args:
        data_dir: the folder holding ``train/``, ``val/`` and ``test/``.
        image_size: side of the crops fed to the network.
        resize_size: side the shorter edge is resized to before cropping.
        transforms_from_model: a timm model name whose data config replaces the reference transforms.
        predict_dir: a folder of images (searched recursively) for ``predict``; default the test split.
        skip_corrupt: decode every image at set-up (on threads; results remembered in
            ``data_dir/.avgk_image_scan.json``, so that only new or changed files are decoded again) and
            skip the unreadable ones (truncated, empty, not an image), naming each and the count; an image
            that breaks later is replaced by the next one and named. Default: an unreadable image stops
            the run with its path.
        decode: ``"draft"``: JPEGs decoded at a reduced scale (shorter side >= `resize_size`), then
            resized; ``"pil"``: every image decoded in full.
        uint8_batches: uint8 crops in the batches, converted and normalised on the device; False:
            normalised float32 crops from the datasets.
        batch_size: samples per batch on each device.
        num_workers: data-loading worker processes per device (0: load in the main process).
        pin_memory: pin host memory for faster transfers (only where CUDA is available).
        persistent_workers: keep the worker processes between epochs (when `num_workers` > 0).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val", "test"):
        ...     for name in ("daisy", "rose"):
        ...         (root / split / name).mkdir(parents=True)
        ...         Image.new("RGB", (40, 30)).save(root / split / name / "a.jpg")
        >>> data = ImageFolderDataModule(root, image_size=32, resize_size=36, batch_size=2)
        >>> data.setup("fit")
        >>> batch = next(iter(data.val_dataloader()))  # an avgk_lightning.batch.Batch
        >>> data.class_names, tuple(batch.images.shape), data.class_counts.tolist()
        (['daisy', 'rose'], (2, 3, 32, 32), [1, 1])
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        image_size: int = 224,
        resize_size: int = 256,
        transforms_from_model: str | None = None,
        predict_dir: str | os.PathLike | None = None,
        skip_corrupt: bool = False,
        decode: str = "draft",
        uint8_batches: bool = True,
        batch_size: int = 32,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers)
        self.data_dir = Path(data_dir).expanduser()
        if not self.data_dir.is_dir():
            raise MissingFileError(
                f"Data directory not found: {self.data_dir} (argument `data_dir`). Pass the folder that "
                "holds train/, val/ and test/."
            )
        for split in SPLITS:
            if not (self.data_dir / split).is_dir():
                raise MissingFileError(
                    f"Split folder not found: {self.data_dir / split}. `data_dir` must hold train/, val/ and "
                    "test/, each with one sub-folder per class."
                )
        check_integer("image_size", image_size)
        check_integer("resize_size", resize_size)
        if resize_size < image_size:
            raise InvalidInputError(
                f"Expected argument `resize_size` ({resize_size}) to be >= `image_size` ({image_size}): "
                "images are resized, then cropped"
            )
        check_choice("decode", decode, DECODERS)
        if not isinstance(uint8_batches, bool):
            raise InvalidInputError(f"Expected argument `uint8_batches` to be True or False, but got {uint8_batches!r}")
        self.decode = decode
        self.uint8_batches = uint8_batches and transforms_from_model is None
        self.predict_dir = None if predict_dir is None else Path(predict_dir).expanduser()
        self.image_size = image_size
        self.resize_size = resize_size
        self.transforms_from_model = transforms_from_model
        self.skip_corrupt = skip_corrupt
        self._classes = self._class_folders()
        if not self._classes:
            raise InvalidInputError(
                f"No class folders in {self.data_dir / 'train'}: put one sub-folder per class there."
            )
        self._index = {name: index for index, name in enumerate(self._classes)}
        self._samples: dict[str, tuple[list[Path], list[int]]] = {}
        self.train_transform, self.eval_transform = self._transforms()

    def _class_folders(self) -> list[str]:
        """Class folder names in class-index order."""
        return sorted(entry.name for entry in os.scandir(self.data_dir / "train") if entry.is_dir())

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def class_names(self) -> list[str]:
        return list(self._classes)

    @property
    def class_counts(self) -> Tensor:
        _, labels = self._split_samples("train")
        return torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=self.num_classes)

    def _transforms(self) -> tuple[Callable, Callable]:
        if self.transforms_from_model is not None:
            import timm
            import timm.data

            if not timm.is_model(self.transforms_from_model):
                raise InvalidInputError(
                    f"Unknown timm model {self.transforms_from_model!r} (argument `transforms_from_model`)"
                )
            pretrained_cfg = timm.models.get_pretrained_cfg(self.transforms_from_model).to_dict()
            config = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg)
            return timm.data.create_transform(**config, is_training=True), timm.data.create_transform(**config)
        normalize = (
            [T.PILToTensor()] if self.uint8_batches else [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )
        train = T.Compose([ResizeCrop(self.resize_size, self.image_size, random=True), *normalize])
        evaluation = T.Compose([ResizeCrop(self.resize_size, self.image_size), *normalize])
        return train, evaluation

    def _list_split(self, split: str) -> tuple[list[Path], list[int]]:
        split_dir = self.data_dir / split
        paths, labels, ignored = [], [], []
        for entry in sorted(os.scandir(split_dir), key=lambda entry: entry.name):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                ignored.append(entry.path)
                continue
            if entry.name not in self._index:
                raise InvalidInputError(
                    f"Unknown class folder {entry.path}: class {entry.name!r} has no folder in "
                    f"{self.data_dir / 'train'}. Class indices come from the training split: add training "
                    "images for it or remove the folder."
                )
            for file in sorted(Path(entry.path).iterdir()):
                if file.name.startswith("."):
                    continue
                if _is_image(file):
                    paths.append(file)
                    labels.append(self._index[entry.name])
                else:
                    ignored.append(str(file))
        if ignored:
            rank_zero_warn(
                f"{len(ignored)} entries of {split_dir} are not images in a class folder and are not used, "
                f"e.g. {ignored[0]} (images: {', '.join(IMAGE_EXTENSIONS)}, in <split>/<class>/)"
            )
        if not paths:
            raise InvalidInputError(
                f"Empty split: no images in {split_dir}/<class>/ (extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        return paths, labels

    def _split_samples(self, split: str) -> tuple[list[Path], list[int]]:
        if split not in self._samples:
            paths, labels = self._list_split(split)
            if self.skip_corrupt:
                readable = self._readable(paths, self.data_dir, f"the {split} split")
                labels = [label for path, label in zip(paths, labels) if path in readable]
                paths = [path for path in paths if path in readable]
            self._samples[split] = (paths, labels)
        return self._samples[split]

    @staticmethod
    def _readable(paths: list[Path], root: Path, what: str) -> set[Path]:
        """The images of `paths` that decode (:func:`~avgk_lightning.data.image_scan.scan_images`); the others named."""
        scan = scan_images(paths, root)
        rank_zero_info(scan.summary(what))
        for path, error in scan.unreadable.items():
            rank_zero_warn(f"skip_corrupt: skipping unreadable image {path} ({error})")
        if scan.unreadable:
            rank_zero_info(f"skip_corrupt: skipped {len(scan.unreadable)} of {len(paths)} images in {what}")
        if len(scan.unreadable) == len(paths):
            raise InvalidInputError(f"Empty split: every image of {what} is unreadable, e.g. {paths[0]}")
        return set(paths) - set(scan.unreadable)

    def prepare_data(self) -> None:
        """With ``skip_corrupt``, scan the splits once per machine (the other processes read the scan's cache)."""
        if self.skip_corrupt:
            for split in SPLITS:
                self._split_samples(split)

    @property
    def draft_size(self) -> int | None:
        """The shorter side JPEGs are decoded to at least (``decode="draft"``), None for full decoding."""
        drafting = self.decode == "draft" and self.transforms_from_model is None
        return self.resize_size if drafting else None

    def _dataset(self, split: str, transform: Callable) -> ImageFileDataset:
        paths, labels = self._split_samples(split)
        return ImageFileDataset(paths, labels, transform, self.draft_size, self.skip_corrupt)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_dataset = self._dataset("train", self.train_transform)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._dataset("val", self.eval_transform)
        if stage in (None, "test", "predict"):
            self.test_dataset = self._dataset("test", self.eval_transform)
        if stage in (None, "predict") and self.predict_dir is not None:
            paths = list_images(self.predict_dir)
            if self.skip_corrupt:
                readable = self._readable(paths, self.predict_dir, f"the predict folder {self.predict_dir}")
                paths = [path for path in paths if path in readable]
            self.predict_dataset = ImageFileDataset(
                paths, None, self.eval_transform, self.draft_size, self.skip_corrupt
            )

    def teardown(self, stage: str) -> None:
        """Report the images that broke during the run and were replaced (``skip_corrupt``)."""
        datasets = (self.train_dataset, self.val_dataset, self.test_dataset, self.predict_dataset)
        for name, dataset in zip(("train", "val", "test", "predict"), datasets):
            if isinstance(dataset, ImageFileDataset) and dataset.replaced:
                rank_zero_warn(
                    f"skip_corrupt: {dataset.replaced} read(s) of unreadable images in the {name} split were replaced "
                    "by the next image (each named in a warning above): replace those files or scan again"
                )

    def prepare_images(self, images: Tensor, augment: bool = False) -> Tensor:
        """uint8 crops of the ``uint8_batches`` datasets -> :func:`imagenet_normalize` (they were cropped on the CPU)."""
        return imagenet_normalize(images)
