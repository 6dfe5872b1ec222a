"""python -m avgk_lightning.data.prepare: a resized copy of an image folder, resumable, never writing into the source."""

import pytest
import torch
from PIL import Image

from avgk_lightning.data import ImageFolderDataModule
from avgk_lightning.data.prepare import main, prepare_resized_copy
from tests.fixtures import write_image


@pytest.fixture()
def source(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        write_image(root / split / "rose" / "big.jpg", 0, size=(900, 600))
        write_image(root / split / "rose" / "small.jpg", 1, size=(200, 150))
        write_image(root / split / "daisy" / "tall.png", 2, size=(300, 700))
    (root / "metadata.json").write_text('{"big": "rose"}')
    (root / "train" / "rose" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _snapshot(root):
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_copy_has_the_same_tree_with_images_resized(source, tmp_path):
    before = _snapshot(source)
    counts = prepare_resized_copy(source, tmp_path / "copy", size=256)
    assert _snapshot(source) == before  # the source is only read
    copy = tmp_path / "copy"
    names = sorted(str(path.relative_to(copy)) for path in copy.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(source)) for path in before)
    assert counts == {"resized": 6, "copied": 5}  # big.jpg, tall.png x 3; small.jpg x 3, broken.jpg, metadata
    assert Image.open(copy / "train" / "rose" / "big.jpg").size == (384, 256)  # as T.Resize(256) rounds
    assert Image.open(copy / "val" / "daisy" / "tall.png").size == (256, 597)
    for name in ("metadata.json", "train/rose/small.jpg", "train/rose/broken.jpg"):
        assert (copy / name).read_bytes() == (source / name).read_bytes()


def test_an_interrupted_copy_resumes(source, tmp_path):
    copy = tmp_path / "copy"
    prepare_resized_copy(source, copy)
    (copy / "val" / "rose" / "big.jpg").unlink()
    (copy / "test" / "rose" / ".big.jpg.partial").write_bytes(b"half")  # a write cut short
    (copy / "test" / "rose" / "big.jpg").unlink()
    assert prepare_resized_copy(source, copy) == {"kept": 9, "resized": 2}
    assert Image.open(copy / "test" / "rose" / "big.jpg").size == (384, 256)


def test_training_on_the_copy_gives_the_same_crops_within_jpeg_tolerance(source, tmp_path):
    (source / "train" / "rose" / "broken.jpg").unlink()
    prepare_resized_copy(source, tmp_path / "copy", size=64)
    crops = []
    for root in (source, tmp_path / "copy"):
        data = ImageFolderDataModule(root, image_size=56, resize_size=64, num_workers=0)
        data.setup("validate")
        crops.append(torch.stack([data.val_dataset[index][0] for index in range(len(data.val_dataset))]).float())
    assert crops[0].shape == crops[1].shape == (3, 3, 56, 56)
    # Re-encoded at quality 95 (0-255 units); white-noise fixtures are the worst case (photos: about 1.3).
    assert (crops[0] - crops[1]).abs().mean() <= 6.0


@pytest.mark.parametrize("destination", [".", "train/copy"])
def test_a_destination_inside_the_source_is_refused(source, destination):
    with pytest.raises(ValueError, match="Argument `destination` .* must lie outside `source`"):
        prepare_resized_copy(source, source / destination)


def test_the_source_inside_the_destination_is_refused(source):
    with pytest.raises(ValueError, match="must lie outside `source` .* and not contain it"):
        prepare_resized_copy(source, source.parent)


def test_bad_arguments_are_named(source, tmp_path, capsys):
    with pytest.raises(ValueError, match="argument `size` to be a positive integer, but got 0"):
        prepare_resized_copy(source, tmp_path / "copy", size=0)
    with pytest.raises(ValueError, match=r"argument `quality` to be an integer in \[1, 100\], but got 101"):
        prepare_resized_copy(source, tmp_path / "copy", quality=101)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere"), str(tmp_path / "copy")])
    assert "Source folder not found: " in capsys.readouterr().err


def test_the_command_reports_what_it_did(source, tmp_path, capsys):
    main([str(source), str(tmp_path / "copy"), "--workers", "2"])
    assert "6 images resized, 5 files copied as they are, 0 already there" in capsys.readouterr().out
