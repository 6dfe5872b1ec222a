"""Shared test helpers, importable from tests and from the jobs in tests/scripts/.

ROOT (the repository), a tiny backbone module (configs and docs name it `tests.helpers.TinyCNNModule`),
a quiet CPU Trainer, the CLI in process (`cli_in_process`) and in a subprocess (`train_py`, `run_script`),
numpy references, and the metric checks the integration and end-to-end tests share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn

from avgk_lightning import TwoHeadModule
from avgk_lightning.cli import AverageKCLI, run_cli

ROOT = Path(__file__).resolve().parents[1]
_LAUNCHER_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "AVGK_RUN_DIR")


class TinyCNNModule(TwoHeadModule):
    """A TwoHeadModule whose backbone is a two-layer CNN without batch norm (the subclassing example)."""

    def __init__(self, *args, width: int = 16, **kwargs) -> None:
        self.width = width
        super().__init__(*args, **kwargs)

    def build_backbone(self) -> tuple[nn.Module, int]:
        backbone = nn.Sequential(
            nn.Conv2d(3, self.width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(self.width, self.width, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        return backbone, self.width


def frozen_sgd(params) -> torch.optim.Optimizer:
    """SGD with lr 0: with no batch norm, the model scores every sample the same way in every epoch."""
    return torch.optim.SGD(params, lr=0.0)


def cpu_trainer(devices: int = 1, **overrides) -> Trainer:
    """A quiet CPU Trainer (no logger, checkpoints, progress bar, summary or sanity check); DDP for devices > 1."""
    options = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp" if devices > 1 else "auto",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return Trainer(**{**options, **overrides})


def reference_threshold(scores: np.ndarray, k: float) -> float:
    """The Pl@ntNet-300K rule by a full sort: (v_m + v_{m+1}) / 2, m = round(N k)."""
    values = np.sort(scores.ravel())[::-1]
    m = min(max(round(scores.shape[0] * k), 1), values.size - 1)
    return float((values[m - 1] + values[m]) / 2)


def tied_scores(n: int, num_classes: int, seed: int, levels: int = 50) -> torch.Tensor:
    """Softmax-like scores rounded to a few levels, so that many values tie."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, num_classes, generator=generator).mul(2).softmax(dim=1)
    return (scores * levels).round() / levels


@torch.no_grad()
def set_head_scores(model: TwoHeadModule, datamodule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The set head's scores (softmax or sigmoid of the logits) and the labels of a split, batch by batch as
    the evaluation loop reads them (the data module's own device-side transform included), in eval mode."""
    loader = getattr(datamodule, f"{split}_dataloader")()
    was_training = model.training
    model.eval()
    scores, targets = [], []
    try:
        for batch in loader:
            images, target = datamodule.on_after_batch_transfer(batch, 0)[:2]
            softmax_logits, multilabel_logits = model(images.to(model.device))
            if model.loss.set_head == "softmax":
                scores.append(softmax_logits.float().softmax(dim=1))
            else:
                scores.append(multilabel_logits.float().sigmoid())
            targets.append(target)
    finally:
        model.train(was_training)
    return torch.cat(scores).cpu().numpy(), torch.cat(targets).cpu().numpy()


def reference_set_metrics(scores: np.ndarray, target: np.ndarray, threshold: float) -> dict[str, float]:
    """avg-K accuracy (the true class's score >= λ) and mean set size by numpy, at a float32 λ as the metrics use."""
    threshold = np.float32(threshold)
    return {
        "avgk_acc": float(np.mean(scores[np.arange(len(target)), target] >= threshold)),
        "set_size": float(np.mean((scores >= threshold).sum(axis=1))),
    }


def assert_same_metrics(expected: dict, actual: dict, rel: float, absolute: float) -> None:
    """The same metric names, and every value equal within the tolerance."""
    assert expected and expected.keys() == actual.keys()
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=rel, abs=absolute), name


class KillAtEpochStart(Callback):
    """Sends SIGKILL to its own process when epoch `epoch` starts (the previous epoch's checkpoint is saved)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(Callback):
    """Sends SIGKILL to its own process when training batch `step` (global step) starts: a kill mid-epoch."""

    signal = signal.SIGKILL

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class TerminateAtStep(KillAtStep):
    """Sends SIGTERM (what a cluster scheduler sends before it stops a job) to its own process at global step `step`."""

    signal = signal.SIGTERM


class RequeueAtStep(Callback):
    """At global step `step`: SIGUSR1, on which Lightning's SLURM auto-requeue saves ``hpc_ckpt_N.ckpt``, then SIGKILL.

    What SLURM does to a job submitted with ``--signal=SIGUSR1@90 --requeue`` at its time limit.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs before the next line
            os.kill(os.getpid(), signal.SIGKILL)


class RecordPseudoLabelThresholds(Callback):
    """Appends each training batch's epoch, index, samples, λ_pl, learning rate and loss to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        threshold = pl_module.pseudo_label_rule.threshold
        record = {
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "threshold": threshold,
            "samples": batch.index.tolist(),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "loss": float(outputs["loss"]),
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


class FillDiskAtEpochStart(Callback):
    """Fills the file system of the run directory when epoch `epoch` starts, leaving `leave_mb` MB free."""

    def __init__(self, epoch: int, leave_mb: float = 1.0) -> None:
        self.epoch = epoch
        self.leave_mb = leave_mb

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            stats = os.statvfs(trainer.default_root_dir)
            free = stats.f_bavail * stats.f_frsize - int(self.leave_mb * 2**20)
            with open(Path(trainer.default_root_dir) / "filler", "wb") as filler:
                filler.truncate(0)
                filler.writelines(bytes(2**20) for _ in range(max(0, free) // 2**20))


def cli_args(config: str = "synthetic_two_head.yaml", max_epochs: int = 1, **data_args: object) -> list[str]:
    """`--config configs/CONFIG`, `max_epochs` epochs without a progress bar, `--data.init_args.NAME=VALUE` each."""
    return [
        "--config",
        str(ROOT / "configs" / config),
        f"--trainer.max_epochs={max_epochs}",
        "--trainer.enable_progress_bar=false",
        *(f"--data.init_args.{name}={value}" for name, value in data_args.items()),
    ]


def checkpoint_of(run_root: Path, name: str = "best.ckpt", version: int = 0) -> Path:
    """The checkpoint `name` of run `version_N` under a run root, as the CLI lays them out."""
    return run_root / f"version_{version}" / "checkpoints" / name


def cli_in_process(args: list[str], run: bool = True) -> AverageKCLI:
    """`train.py ARGS` in this process (as `make run` does, without a subprocess); returns the CLI object.

    With `run` false, `args` name no subcommand and the CLI only builds its trainer, model and data module.
    """
    with mock.patch("sys.argv", ["train.py"]):
        return run_cli(args, run=run)


def run_process_group(
    command: list[str], timeout: float = 300, extra_env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `command` from the repository root in its own process group, then kill the whole group.

    Whatever happens (a timeout, a failure, DDP ranks the command launched), no process is left behind.
    `extra_env` adds environment variables. Returns the exit status (negative for a signal) and the merged
    stdout/stderr, in the order written.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    for name in _LAUNCHER_VARIABLES:
        env.pop(name, None)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return process.returncode, output


def train_py(*args: object, timeout: float = 300) -> tuple[int, str]:
    """`python train.py ARGS...` as a user runs it, through run_process_group."""
    return run_process_group([sys.executable, "train.py", *map(str, args)], timeout)


def run_script(name: str, *args: object, timeout: float = 240) -> tuple[int, str]:
    """`python -m tests.scripts.NAME ARGS...` through run_process_group (the DDP and kill jobs)."""
    return run_process_group([sys.executable, "-m", f"tests.scripts.{name}", *map(str, args)], timeout)
