"""A full disk while a file is written: one clear line, and the previous file of that name whole and loadable.

The disk is a real one: a small tmpfs mounted for the test (root only; elsewhere the tests say why they skip).
"""

import os
import subprocess

import pytest
import torch

from avgk_lightning.atomic import atomic_path
from avgk_lightning.checkpoint import read_checkpoint
from avgk_lightning.errors import WriteFailedError
from tests.helpers import checkpoint_of, cli_args, cli_in_process


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 400 MB at tmp_path/disk, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mount)]
    result = subprocess.run(command, check=False, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_one(small_disk):
    path = small_disk / "record.bin"
    path.write_bytes(b"the previous content")
    (small_disk / "filler").write_bytes(b"")
    message = f"Cannot write file {path}: No space left on device. Nothing was"
    with (
        pytest.raises(WriteFailedError, match=message),
        atomic_path(path) as partial,
        open(small_disk / "filler", "ab") as filler,
    ):
        partial.write_bytes(b"new")
        while True:  # fill the disk, then write the rest of the new file
            filler.write(bytes(2**24))
    assert path.read_bytes() == b"the previous content"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "record.bin"]


def test_a_full_disk_during_a_checkpoint_save_ends_in_one_line_with_best_and_last_intact(small_disk, capsys):
    args = [
        "fit",
        *cli_args(max_epochs=3, train_size=640, val_size=256, test_size=257, batch_size=64),
        "--trainer.logger=false",
        f"--trainer.default_root_dir={small_disk}",
        "--trainer.callbacks+=tests.helpers.FillDiskAtEpochStart",
        "--trainer.callbacks.epoch=1",
        "--trainer.callbacks.leave_mb=20",  # less than one checkpoint of resnet18 with its momentum
    ]
    with pytest.raises(SystemExit) as stopped:
        cli_in_process(args)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: Cannot write checkpoint {small_disk}/version_0/checkpoints/")
    assert "No space left on device. Nothing was replaced" in error
    for name in ("best.ckpt", "last.ckpt"):
        saved = read_checkpoint(checkpoint_of(small_disk, name))  # whole: it loads
        assert saved["epoch"] == 0 and saved["average_k"]["thresholds"]
    checkpoints = checkpoint_of(small_disk).parent
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial file left
    assert torch.load(checkpoint_of(small_disk, "last.ckpt"), weights_only=True)["global_step"] == 10


@pytest.mark.parametrize("file_format", ["torchscript", "onnx"])
def test_a_full_disk_during_an_export_keeps_the_previous_export_whole(small_disk, file_format):
    from avgk_lightning import TwoHeadModule
    from avgk_lightning.export import export_set_predictor

    model = TwoHeadModule(num_classes=5, k=2, backbone="small_vgg", predict_head="multilabel")
    model.calibration.average_k = {"multilabel": {2.0: 0.5}}
    name = "predictor.onnx" if file_format == "onnx" else "predictor.pt"
    path = export_set_predictor(model, small_disk / name, input_shape=(3, 28, 28), file_format=file_format)
    before = path.read_bytes()
    with open(small_disk / "filler", "wb") as filler:  # leave less than one export free
        stats = os.statvfs(small_disk)
        free = stats.f_bavail * stats.f_frsize
        filler.write(bytes(max(0, free - len(before) // 2)))
    with pytest.raises(WriteFailedError, match=f"Cannot write export {path}: No space left on device"):
        export_set_predictor(model, path, input_shape=(3, 28, 28), file_format=file_format)
    assert path.read_bytes() == before  # the previous export, byte for byte
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", name]
