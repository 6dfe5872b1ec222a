"""SetPredictionWriter: the predicted sets of ``train.py predict``, one JSONL or CSV line per image."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from avgk_lightning.atomic import atomic_path
from avgk_lightning.data.base import PADDING, IndexedDataset
from avgk_lightning.errors import InvalidInputError

__all__ = ["SetPredictionWriter"]

_FIELDS = ("index", "path", "k", "set_size", "set", "scores", "class_indices")


class SetPredictionWriter(BasePredictionWriter):
    """Writes each predicted set, ordered by decreasing score, with its scores.

    One line per image: ``index`` (in the predicted split), ``path`` (the image file, or ``test[i]``
    for data without files), ``k`` and ``set_size``, ``set`` (class names), ``scores`` and
    ``class_indices``. The format follows the file suffix: ``.jsonl`` (default) or ``.csv`` (lists as
    JSON text). Lines are in dataset order, also under DDP (each process writes a part file; process 0
    merges them). An existing file is never overwritten unless ``overwrite=True``.

    Args:
        output: the file to write; default ``<run dir>/predictions.jsonl``.
        overwrite: replace an existing `output`.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[SetPredictionWriter("sets.jsonl")], logger=False)
    """

    def __init__(self, output: str | None = None, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.overwrite = overwrite
        self.path: Path | None = None
        self._part: Any = None
        self._seen = 0

    def _resolve(self, trainer: Trainer) -> Path:
        path = Path(self.output).expanduser() if self.output else Path(trainer.default_root_dir) / "predictions.jsonl"
        if path.suffix not in (".jsonl", ".csv"):
            raise InvalidInputError(
                f"Unsupported predictions file {path} (argument `predictions.output`): use a .jsonl or .csv name"
            )
        return path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.path = self._resolve(trainer)
        if self.path.exists() and not self.overwrite:
            raise InvalidInputError(
                f"Predictions file {self.path} exists (argument `predictions.output`): pass another file name, "
                "or --predictions.overwrite true to replace it."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = open(self._part_path(trainer.global_rank), "w")  # noqa: SIM115 (closed at on_predict_end)
        self._seen = 0

    def _part_path(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.rank{rank}.part")

    @staticmethod
    def _identifier(trainer: Trainer, index: int) -> str:
        dataloaders = trainer.predict_dataloaders
        dataset = getattr(dataloaders, "dataset", None)
        if isinstance(dataset, IndexedDataset):
            dataset = dataset.dataset
        paths = getattr(dataset, "paths", None)
        if paths is not None:
            return str(paths[index])
        datamodule = trainer.datamodule
        split = "predict" if getattr(datamodule, "predict_dataset", None) is not None else "test"
        return f"{split}[{index}]"

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        scores, sets = prediction["scores"].float().cpu(), prediction["sets"].cpu()
        if batch_indices is None:  # Lightning could not track them (an iterable dataset): count
            batch_indices = range(self._seen, self._seen + scores.shape[0])
        self._seen += scores.shape[0]
        names = getattr(pl_module, "class_names", None) or [str(i) for i in range(scores.shape[1])]
        order = scores.argsort(dim=1, descending=True)
        for index, row_scores, row_set, row_order in zip(batch_indices, scores, sets, order):
            if index == PADDING:  # a process without images of its own read one to step with the others
                continue
            members = [int(j) for j in row_order if row_set[j]]
            record = {
                "index": int(index),
                "path": self._identifier(trainer, int(index)),
                "k": prediction["k"],
                "set_size": len(members),
                "set": [names[j] for j in members],
                "scores": [round(float(row_scores[j]), 6) for j in members],
                "class_indices": members,
            }
            self._part.write(json.dumps(record) + "\n")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._part.close()
        trainer.strategy.barrier("SetPredictionWriter")
        if trainer.is_global_zero:
            records = []
            for rank in range(trainer.world_size):
                part = self._part_path(rank)
                records += [json.loads(line) for line in part.read_text().splitlines()]
                part.unlink()
            records.sort(key=lambda record: record["index"])
            with (
                atomic_path(self.path, "predictions", overwrite=self.overwrite) as partial,
                open(partial, "w", newline="") as handle,
            ):
                if self.path.suffix == ".csv":
                    writer = csv.DictWriter(handle, fieldnames=_FIELDS)
                    writer.writeheader()
                    for record in records:
                        writer.writerow(
                            {
                                key: json.dumps(value) if isinstance(value, list) else value
                                for key, value in record.items()
                            }
                        )
                else:
                    handle.writelines(json.dumps(record) + "\n" for record in records)
            rank_zero_info(f"Wrote {len(records)} predicted sets to {self.path}")
        trainer.strategy.barrier("SetPredictionWriter.merged")
