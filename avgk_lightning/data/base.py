"""Shared base of the data modules: per-device loaders that are correct under DDP."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from avgk_lightning.batch import Batch, collate_batch
from avgk_lightning.checks import check_integer
from avgk_lightning.data.resumable import ReplayableDistributedSampler, ReplayableRandomSampler, ResumableLoader

# The index an EvaluationSampler gives a process with no sample of its own: sample 0, to be dropped.
PADDING = -1


class IndexedDataset(Dataset):
    """`dataset` whose items come with their index, ``(item, index)``, for :func:`~avgk_lightning.batch.collate_batch`.

    The index :data:`PADDING` reads sample 0 and keeps the index ``PADDING``: the module drops it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        return self.dataset[0 if index == PADDING else index], index


class EvaluationSampler(DistributedSampler):
    """One process's share of an evaluation split: over the processes, every sample exactly once.

    Process r reads samples r, r + W, r + 2W, ... (W processes), as Lightning's
    ``UnrepeatedDistributedSampler``; a process whose share is empty (a split smaller than W) reads one
    :data:`PADDING` item instead, so that it runs the evaluation loop and enters its collectives like the
    others (Lightning skips the loop of an empty loader, and its sampler refuses an empty share).

    Example:
        >>> [list(EvaluationSampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
        [[0, 2, 4], [1, 3]]
        >>> [list(EvaluationSampler(range(1), num_replicas=2, rank=r)) for r in (0, 1)]
        [[0], [-1]]
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(dataset), num_replicas)) or [PADDING]
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class AverageKDataModule(LightningDataModule, ABC):
    """Base data module: `batch_size` is per device; evaluation sees every sample exactly once.

    Lightning's default distributed sampler pads the evaluation splits by repeating samples so that
    every process gets the same number of batches; the repeated samples would then enter the λ_K
    calibration and the accuracies twice. Here validation, test and predict use an unrepeated sampler
    instead (processes may differ by one sample), so the gathered metrics equal the single-process ones.

    Batches are :class:`~avgk_lightning.batch.Batch` tuples: images, targets, the true label
    distributions (Bayes posteriors) where the data module knows them, and the dataset index of each
    sample (which losses with per-sample state, such as ROLE, need). Datasets yield ``(image, target)``,
    ``(image, target, posterior)`` or, without labels, ``(image,)``.

    Subclasses set ``self.train_dataset``, ``self.val_dataset`` and ``self.test_dataset`` in
    :meth:`setup` (``self.predict_dataset`` defaults to the test split) and define the properties below.

    Args:
        batch_size: samples per batch on each device.
        num_workers: data-loading worker processes per device (0: load in the main process).
        pin_memory: pin host memory for faster transfers (only where CUDA is available).
        persistent_workers: keep the worker processes between epochs (when `num_workers` > 0).
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        check_integer("batch_size", batch_size)
        check_integer("num_workers", num_workers, minimum=0)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes L, known before :meth:`setup` (the CLI links it into the model)."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """One name per class index."""

    @property
    @abstractmethod
    def class_counts(self) -> Tensor:
        """Training samples per class, (L,) int64."""

    def prepare_images(self, images: Tensor, augment: bool = False) -> Tensor:
        """uint8 images of a batch -> what the network takes, on their device; `augment` for training batches.

        Data modules that keep their images uint8 until the device (less host work and transfer) override
        it; :meth:`on_after_batch_transfer` calls it. The default returns the images unchanged.
        """
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Send the uint8 images of a batch (a Batch, a tuple or a bare tensor) through :meth:`prepare_images`."""
        training = self.trainer is not None and self.trainer.training
        if isinstance(batch, Tensor):
            return self.prepare_images(batch, augment=training) if batch.dtype == torch.uint8 else batch
        batch = Batch.of(batch)
        if batch.images.dtype != torch.uint8:
            return batch
        return batch._replace(images=self.prepare_images(batch.images, augment=training))

    def _loader(self, dataset: Dataset | None, split: str, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create the {split} split")
        dataset = IndexedDataset(dataset)
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        # A last training batch of one sample breaks batch norm: leave that sample to the next epoch's
        # shuffle instead (one sample per epoch and process, never the same one for long).
        per_process = -(-len(dataset) // world_size)
        drop_last = train and per_process > 1 and per_process % self.batch_size == 1
        workers = self.num_workers
        options = {
            "batch_size": self.batch_size,
            "drop_last": drop_last,
            "num_workers": workers,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.persistent_workers and workers > 0,
            "collate_fn": collate_batch,
        }
        if train:
            # The shuffle Lightning would use (RandomSampler, or its DistributedSampler under DDP), made
            # replayable: a run resumed from a checkpoint written mid-epoch continues the same epoch.
            if world_size > 1:
                seed = int(os.getenv("PL_GLOBAL_SEED", "0"))
                rank = trainer.global_rank
                sampler = ReplayableDistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed)
            else:
                sampler = ReplayableRandomSampler(dataset)
            return ResumableLoader(dataset, sampler=sampler, batches_done=self._training_batches_done, **options)
        sampler = None
        if world_size > 1:
            sampler = EvaluationSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank)
        # Evaluation loaders draw their worker seeds from a generator of their own, not from the global
        # one: validation then leaves the training random streams untouched (exact resume).
        return DataLoader(dataset, sampler=sampler, generator=torch.Generator().manual_seed(0), **options)

    def _training_batches_done(self) -> int:
        """Batches of the current training epoch trained so far (what a mid-epoch checkpoint resumes after).

        Lightning's count of processed batches: the batches a resume from this moment does not train again.
        """
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset or self.test_dataset, "predict", train=False)
