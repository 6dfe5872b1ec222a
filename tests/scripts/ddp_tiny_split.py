"""Fit, test and predict with validation and test splits of one image each, on 1 or 2 CPU processes.

Usage: python -m tests.scripts.ddp_tiny_split OUT.json DEVICES

With 2 processes one of them receives no validation or test sample at all: every collective must still
be entered by both (a process that skips one hangs the other), and the metrics must equal 1 process's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
from lightning.pytorch import seed_everything

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.prediction import SetPredictionWriter
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd


def main(out_path: str, devices: int) -> None:
    seed_everything(0)
    data = SyntheticAmbiguityDataModule(train_size=256, val_size=1, test_size=1, batch_size=32)
    model = TinyCNNModule(num_classes=40, k=2, eval_ks=[1, 2], optimizer=frozen_sgd)
    predictions = Path(out_path).with_suffix(".predictions.jsonl")
    writer = SetPredictionWriter(str(predictions), overwrite=True)
    trainer = cpu_trainer(devices, max_epochs=1, callbacks=[PseudoLabelThreshold(), writer])
    trainer.fit(model, data)
    results = {"fit": {name: float(value) for name, value in trainer.callback_metrics.items()}}
    trainer.test(model, data, verbose=False)
    results["test"] = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.predict(model, data, return_predictions=False)
    if trainer.is_global_zero:
        results["predictions"] = [json.loads(line) for line in predictions.read_text().splitlines()]
    distributed = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if distributed else 1
    if trainer.is_global_zero:
        with open(out_path, "w") as handle:
            json.dump({"world_size": world_size, **results}, handle, indent=1)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
