"""Train with last.ckpt saved each epoch; SIGKILL this process halfway through writing the second last.ckpt.

Usage: python -m tests.scripts.kill_during_save RUN_DIR

Each epoch writes the top-1 checkpoint, then last.ckpt; during the fourth write (epoch 1's last.ckpt)
the bytes stop after half and the process kills itself with SIGKILL (a real signal: no clean-up runs).
"""

from __future__ import annotations

import os
import signal
import sys

from fsspec.implementations.local import LocalFileOpener
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from tests.helpers import TinyCNNModule, cpu_trainer

_original_write = LocalFileOpener.write
_saves = {"count": 0}


def _write_then_die_on_second_save(self, data):
    if isinstance(data, (bytes, bytearray)) and len(data) > 1000:
        _saves["count"] += 1
        if _saves["count"] == 4:  # per epoch: the top-1 file, then last.ckpt; this is the second last.ckpt
            _original_write(self, data[: len(data) // 2])
            self.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return _original_write(self, data)


def main(run_dir: str) -> None:
    seed_everything(0)
    LocalFileOpener.write = _write_then_die_on_second_save
    callbacks = [PseudoLabelThreshold(), ModelCheckpoint(dirpath=run_dir, save_last=True)]
    trainer = cpu_trainer(
        max_epochs=3, callbacks=callbacks, enable_checkpointing=True, limit_val_batches=0, default_root_dir=run_dir
    )
    data = SyntheticAmbiguityDataModule(train_size=256, val_size=64, test_size=64, batch_size=64)
    trainer.fit(TinyCNNModule(num_classes=40, k=2), data)


if __name__ == "__main__":
    main(sys.argv[1])
