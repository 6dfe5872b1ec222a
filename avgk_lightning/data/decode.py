"""Reading photos for the image-folder pipeline: JPEG draft decoding and one-resample resized crops."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from avgk_lightning.checks import check_integer
from avgk_lightning.errors import InvalidInputError

__all__ = ["FULL_SIZE", "ResizeCrop", "read_rgb", "resized_size"]

# The key of Image.info that records the full (width, height) of a JPEG decoded at a reduced scale.
FULL_SIZE = "avgk_full_size"


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) of an image of `size` with its shorter side resized to `shorter`, as ``T.Resize`` rounds.

    Example:
        >>> resized_size((1200, 900), 256), resized_size((900, 1200), 256)
        ((341, 256), (256, 341))
    """
    width, height = size
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def read_rgb(path: Path, draft_size: int | None = None) -> Image.Image:
    """The image at `path` in RGB; with `draft_size`, a large JPEG is decoded at a reduced scale.

    With `draft_size`, a JPEG whose shorter side is at least twice `draft_size` is decoded at 1/2, 1/4
    or 1/8 of its size: the largest reduction that keeps the shorter side >= `draft_size`, done by the
    JPEG decoder in the DCT domain (far less work). The full size is recorded in
    ``image.info[FULL_SIZE]`` for :class:`ResizeCrop`, which computes its geometry on it.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "photo.jpg"
        >>> Image.new("RGB", (1200, 900), "green").save(path)
        >>> image = read_rgb(path, draft_size=256)
        >>> read_rgb(path).size, image.size, image.info[FULL_SIZE]
        ((1200, 900), (600, 450), (1200, 900))
    """
    try:
        with Image.open(path) as image:
            full_size = image.size
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise InvalidInputError(
            f"Cannot read image {path}: {error}. Replace or remove the file, or pass "
            "`skip_corrupt=True` (--data.init_args.skip_corrupt true) to skip unreadable images."
        ) from error
    if rgb.size != full_size:
        rgb.info[FULL_SIZE] = full_size
    return rgb


class ResizeCrop:
    """``T.Resize(resize_size)`` then ``T.CenterCrop(crop_size)`` (or ``T.RandomCrop``) in one resample.

    Only the crop's box of the source is resampled (Pillow's bilinear filter, as ``T.Resize`` uses on
    images), to the crop's size: the same pixels, within rounding, for a fraction of the work. The
    random crop draws its offsets from torch's global generator as ``T.RandomCrop`` does. An image
    decoded at a reduced scale (:func:`read_rgb`, ``info[FULL_SIZE]``) gets the geometry of its full size.

    Example:
        >>> image = Image.new("RGB", (1200, 900), "green")
        >>> ResizeCrop(256, 224)(image).size
        (224, 224)
    """

    def __init__(self, resize_size: int, crop_size: int, random: bool = False) -> None:
        check_integer("resize_size", resize_size)
        check_integer("crop_size", crop_size)
        if resize_size < crop_size:
            raise InvalidInputError(
                f"Expected argument `resize_size` ({resize_size}) to be >= `crop_size` ({crop_size}): "
                "images are resized, then cropped"
            )
        self.resize_size = resize_size
        self.crop_size = crop_size
        self.random = random

    def __call__(self, image: Image.Image) -> Image.Image:
        full_width, full_height = image.info.get(FULL_SIZE, image.size)
        # The reduction of a draft decode (1 otherwise); the decoder rounds the reduced size up.
        scale = -(-full_width // image.width)
        width, height = resized_size((full_width, full_height), self.resize_size)
        crop = self.crop_size  # <= the shorter side, resize_size
        if not self.random:
            top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)
        elif (width, height) == (crop, crop):
            top = left = 0
        else:
            top = int(torch.randint(0, height - crop + 1, size=(1,)))
            left = int(torch.randint(0, width - crop + 1, size=(1,)))
        x_scale, y_scale = full_width / width / scale, full_height / height / scale
        box = (left * x_scale, top * y_scale, (left + crop) * x_scale, (top + crop) * y_scale)
        return image.resize((crop, crop), Image.BILINEAR, box=box)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resize_size={self.resize_size}, crop_size={self.crop_size}, random={self.random})"
        )
