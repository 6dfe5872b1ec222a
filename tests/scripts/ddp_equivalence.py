"""Run the same seeded job on 1 or 2 CPU processes and write what it measured to a JSON file.

Usage: python -m tests.scripts.ddp_equivalence OUT.json DEVICES

A frozen (lr 0) model without batch norm gives every sample the same scores whatever the number of
processes, so the epoch pseudo-label threshold, the validation and test metrics and the metrics
computed on uneven shards must all be equal between DEVICES=1 and DEVICES=2 (float tolerance); so must
those of a model with a multi-label head per K.
The validation split (65 samples) gives the two processes 2 and 1 batches of 32.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from lightning.pytorch import seed_everything

from avgk_lightning import PseudoLabelThreshold
from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.metrics import AverageKAccuracy, AverageKEvaluation, MeanSetSize
from tests.helpers import TinyCNNModule, cpu_trainer, frozen_sgd, tied_scores


def _sharded_metrics(rank: int, world_size: int) -> dict[str, float]:
    scores = tied_scores(201, 9, seed=7)
    target = torch.randint(0, 9, (201,), generator=torch.Generator().manual_seed(8))
    shard = slice(rank, None, world_size)  # 101 and 100 rows
    metrics = {
        "avgk_acc@2.5": AverageKAccuracy(9, 2.5),
        "avgk_acc_macro@2.5": AverageKAccuracy(9, 2.5, average="macro"),
        "set_size@2.5": MeanSetSize(9, 2.5),
        "fixed_avgk_acc_macro": AverageKAccuracy(9, 2.5, threshold=0.1, average="macro"),
        "fixed_set_size": MeanSetSize(9, 2.5, threshold=0.1),
    }
    results = {}
    for name, metric in metrics.items():
        metric.update(scores[shard], target[shard])
        results[name] = metric.compute().item()
    results["threshold@2.5"] = metrics["avgk_acc@2.5"].threshold.item()
    evaluation = AverageKEvaluation(9, [1, 3])
    evaluation.update(scores[shard], target[shard])
    results.update({f"evaluation/{name}": value.item() for name, value in evaluation.compute().items()})
    return results


def _fit_and_evaluate(model: TinyCNNModule, data: SyntheticAmbiguityDataModule, devices: int, test: bool) -> dict:
    """Fit 2 epochs, validate (and test): the epoch λ_pl and the metrics after each stage."""
    pseudo_labels = PseudoLabelThreshold()
    trainer = cpu_trainer(devices, max_epochs=2, callbacks=[pseudo_labels])
    trainer.fit(model, data)
    results = {"epoch_threshold": pseudo_labels.threshold}
    results["fit"] = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.validate(model, data, verbose=False)
    results["val"] = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if test:
        trainer.test(model, data, verbose=False)
        results["test"] = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return results


def main(out_path: str, devices: int) -> None:
    seed_everything(0)
    data = SyntheticAmbiguityDataModule(train_size=600, val_size=65, test_size=67, batch_size=32)
    model = TinyCNNModule(num_classes=40, k=3, eval_ks=[1, 2.5, 3], optimizer=frozen_sgd)
    single_k = _fit_and_evaluate(model, data, devices, test=True)
    seed_everything(1)  # a frozen model with a multi-label head per K (1.5 and 3)
    model = TinyCNNModule(num_classes=40, k=[1.5, 3], eval_ks=[1, 3], optimizer=frozen_sgd)
    multi_k = _fit_and_evaluate(model, data, devices, test=False)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    sharded = _sharded_metrics(rank, world_size)
    if rank == 0:
        with open(out_path, "w") as handle:
            json.dump(
                {
                    "world_size": world_size,
                    **single_k,
                    "sharded": sharded,
                    "multi_k": multi_k,
                },
                handle,
                indent=1,
            )
    if distributed:  # a clean shutdown: gloo's threads can abort a process that exits with the group alive
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
