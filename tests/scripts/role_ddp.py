"""Train ROLE for 2 epochs on 1 or 2 CPU processes; save the merged label estimates and each rank's batches.

Usage: python -m tests.scripts.role_ddp OUT_DIR DEVICES

The network is frozen (lr 0, no batch norm), so every sample's scores are the same on every process and
the label estimates after training depend only on which batches were seen: a single process replaying
the recorded batches must reproduce the matrix the processes merged (tests/e2e/test_role_ddp.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything

from avgk_lightning.data import SyntheticAmbiguityDataModule
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd


def build() -> tuple[TinyCNNModule, SyntheticAmbiguityDataModule]:
    seed_everything(0)
    data = SyntheticAmbiguityDataModule(train_size=192, val_size=40, test_size=40, batch_size=32)
    model = TinyCNNModule(num_classes=40, k=2, method="role", optimizer=frozen_sgd, eval_ks=[2])
    return model, data


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches[-1].append(batch[-1].tolist())


def main(out_dir: str, devices: int) -> None:
    out = Path(out_dir)
    model, data = build()
    recorder = RecordBatches()
    trainer = cpu_trainer(devices, max_epochs=2, callbacks=[recorder])
    trainer.fit(model, data)
    (out / f"batches_rank{trainer.global_rank}.json").write_text(json.dumps(recorder.batches))
    if trainer.global_rank == 0:
        torch.save(model.loss.estimates.state_dict(), out / "estimates.pt")
    if torch.distributed.is_initialized():  # a clean shutdown (see ddp_equivalence.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
