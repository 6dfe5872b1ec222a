"""The image-folder input pipeline: draft decoding, one-resample crops, uint8 batches, against the transforms before."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from avgk_lightning.batch import Batch
from avgk_lightning.data import ImageFolderDataModule
from avgk_lightning.data.decode import FULL_SIZE, ResizeCrop, read_rgb
from avgk_lightning.data.folder import IMAGENET_MEAN, IMAGENET_STD

# (width, height): landscape and portrait photos decoded at 1/4 or 1/2, odd sizes, and one too small to draft.
SIZES = ((1400, 1037), (600, 900), (1037, 773), (555, 1201), (300, 200))
# Evaluation crops of the draft decode against the full decode, 0-255 units: mean and 99.9th percentile (the
# benchmark's photo-like JPEGs: 0.35 and 4; these test images, with a saturated sharp-edged block: about 0.5 and 11).
DRAFT_MEAN_TOLERANCE, DRAFT_P999_TOLERANCE = 1.0, 16.0


def _photo(width, height, seed):
    """Smooth gradients and waves with some sharp edges, saved as a quality-90 JPEG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    channels = [
        128 + 60 * np.sin(x / (17 + 7 * c) + phase[c]) * np.cos(y / (23 + 5 * c)) + 50 * (x / width - y / height)
        for c in range(3)
    ]
    pixels = np.stack(channels, -1)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = (250, 20, 40)  # a block with sharp edges
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture()
def photo_folder(tmp_path):
    for split in ("train", "val", "test"):
        for index, size in enumerate(SIZES):
            path = tmp_path / split / f"class{index % 2}" / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            _photo(*size, seed=index).save(path, quality=90)
    return tmp_path


def _before(train):
    crop = T.RandomCrop(224) if train else T.CenterCrop(224)
    return T.Compose([T.Resize(256), crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _to_255(images):
    if images.dtype == torch.uint8:
        return images.float()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (images * std + mean) * 255


def _crops(data, split="val"):
    dataset = getattr(data, f"{split}_dataset")
    return torch.stack([dataset[index][0] for index in range(len(dataset))])


def _data(root, **kwargs):
    data = ImageFolderDataModule(root, batch_size=8, num_workers=0, **kwargs)
    data.setup("fit")
    return data


def test_full_decode_crops_equal_the_transforms_before_within_rounding(photo_folder):
    data = _data(photo_folder, decode="pil", uint8_batches=False)
    paths = data.val_dataset.paths
    before = torch.stack([_before(train=False)(read_rgb(path)) for path in paths])
    now = _crops(data)
    assert now.shape == before.shape == (len(SIZES), 3, 224, 224) and now.dtype == torch.float32
    assert (_to_255(now) - _to_255(before)).abs().max() <= 1.0 + 1e-3


def test_random_crops_follow_the_same_random_draws_as_random_crop(photo_folder):
    paths = _data(photo_folder, decode="pil").train_dataset.paths
    random_crop = ResizeCrop(256, 224, random=True)
    for path in paths:
        image = read_rgb(path)
        torch.manual_seed(3)
        before = _to_255(_before(train=True)(image))
        torch.manual_seed(3)
        now = T.PILToTensor()(random_crop(image)).float()
        assert (now - before).abs().max() <= 1.0


def test_draft_decode_stays_within_the_stated_tolerance(photo_folder):
    full = _to_255(_crops(_data(photo_folder, decode="pil")))
    draft_data = _data(photo_folder)  # the defaults: decode="draft", uint8_batches=True
    decoded = {int(path.stem): read_rgb(path, draft_data.draft_size) for path in draft_data.val_dataset.paths}
    # Decoded at 1/4, 1/2, 1/2, 1/2 (shorter side >= 256 = resize_size); 300x200 is read in full.
    assert [decoded[index].size for index in range(len(SIZES))] == [
        (350, 260),
        (300, 450),
        (519, 387),
        (278, 601),
        (300, 200),
    ]
    assert [decoded[index].info.get(FULL_SIZE) for index in range(len(SIZES))] == [*SIZES[:4], None]
    difference = (_to_255(_crops(draft_data)) - full).abs()
    assert difference.mean() <= DRAFT_MEAN_TOLERANCE
    assert difference.flatten().kthvalue(int(0.999 * difference.numel())).values <= DRAFT_P999_TOLERANCE


def test_uint8_batches_are_normalised_on_the_device_as_before(photo_folder):
    uint8 = _data(photo_folder, decode="pil")
    floats = _data(photo_folder, decode="pil", uint8_batches=False)
    batch = next(iter(uint8.val_dataloader()))
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (len(SIZES), 3, 224, 224)
    prepared = uint8.on_after_batch_transfer(batch, 0)
    assert isinstance(prepared, Batch) and prepared.target.tolist() == batch.target.tolist()
    expected = next(iter(floats.val_dataloader())).images
    assert prepared.images.dtype == torch.float32
    torch.testing.assert_close(prepared.images, expected, rtol=0, atol=1e-6)
    assert floats.on_after_batch_transfer(Batch(expected), 0).images is expected  # float batches pass as they are


def test_training_batches_have_the_shape_dtype_and_range_of_before(photo_folder):
    before = _data(photo_folder, decode="pil", uint8_batches=False)
    now = _data(photo_folder)
    images = now.on_after_batch_transfer(next(iter(now.train_dataloader())), 0).images
    reference = next(iter(before.train_dataloader())).images
    assert images.shape == reference.shape == (len(SIZES), 3, 224, 224) and images.dtype == reference.dtype
    low, high = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD), (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD)
    assert low <= images.min() and images.max() <= high


def test_timm_transforms_keep_full_decoding_and_float_crops(photo_folder):
    data = _data(photo_folder, transforms_from_model="resnet50.tv_in1k")
    assert data.draft_size is None and not data.uint8_batches
    assert data.val_dataset[0][0].dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decode": "turbo"}, "argument `decode` to be 'draft' or 'pil', but got 'turbo'"),
        ({"uint8_batches": "yes"}, "argument `uint8_batches` to be True or False, but got 'yes'"),
    ],
)
def test_bad_switch_values_name_the_argument(photo_folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(photo_folder, **kwargs)


def test_resize_crop_checks_its_sizes():
    with pytest.raises(ValueError, match=r"argument `resize_size` \(200\) to be >= `crop_size` \(224\)"):
        ResizeCrop(200, 224)
    with pytest.raises(ValueError, match="crop_size"):
        ResizeCrop(256, 0)
