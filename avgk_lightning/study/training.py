"""A study's trainings: each job is ``train.py fit`` built through the CLI, then tested from its checkpoints."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

from avgk_lightning.cli import AverageKCLI, run_cli
from avgk_lightning.cli.calibration import calibrated_for_the_checkpoint, validate_final_weights
from avgk_lightning.study.plan import StudyPlan
from avgk_lightning.study.records import Job, RunRecord

__all__ = ["EpochRecorder", "build_run", "run_job", "run_jobs"]


class EpochRecorder(Callback):
    """Keeps, for every training epoch, its training metrics and the validation average-K accuracies after it.

    ``train_top1_acc`` holds the epoch value of ``train/top1_acc``; ``epoch_metrics`` one dict per epoch
    with every ``train/`` epoch value (the loss terms) and every ``val/`` average-K accuracy (each head, each
    K): how fast each head learns.
    """

    def __init__(self) -> None:
        self.train_top1_acc: list[float] = []
        self.epoch_metrics: list[dict[str, float]] = []

    def _record(self, trainer: Trainer) -> None:
        metrics = trainer.callback_metrics
        self.train_top1_acc.append(float(metrics.get("train/top1_acc", float("nan"))))
        self.epoch_metrics.append(
            {
                name: float(value)
                for name, value in metrics.items()
                if (name.startswith("train/") and not name.endswith("_step"))
                or (name.startswith("val/") and "avgk_acc@" in name)
            }
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        # The epoch metrics of the previous epoch are computed after every on_train_epoch_end hook.
        if trainer.current_epoch > 0 and len(self.train_top1_acc) < trainer.current_epoch:
            self._record(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        self._record(trainer)


def build_run(config: str, seed: int, max_epochs: int, root: str, overrides: Sequence[str]) -> AverageKCLI:
    """``train.py fit`` of `config` built, not run: quiet, no logger, in `root`, the module's default schedule.

    `overrides` are ``KEY=VALUE`` command-line overrides. Returns the CLI (``.trainer``, ``.model``,
    ``.datamodule``).
    """
    arguments = [
        f"--config={config}",
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={max_epochs}",
        "--model.init_args.lr_scheduler=null",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        *(f"--{override}" for override in overrides),
    ]
    with warnings.catch_warnings():
        # LightningCLI warns whenever the calling program has command-line arguments of its own (this tool's).
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return run_cli(arguments, run=False)


def run_job(plan: StudyPlan, job: Job, root: str) -> RunRecord:
    """Fit one job in its own folder `root` and test it from each checkpoint of the plan."""
    started = time.perf_counter()
    cli = build_run(
        plan.config,
        job.seed,
        plan.max_epochs,
        root,
        [
            f"model.init_args.method={job.row.method}",
            *job.overrides,
            *job.row.overrides,
            *([f"model.init_args.k={job.k}"] if job.k is not None else []),
            *([f"model.init_args.eval_ks=[{','.join(map(str, plan.per_k))}]"] if plan.per_k is not None else []),
        ],
    )
    recorder = EpochRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    validate_final_weights(cli.trainer, cli.model, cli.datamodule, cli.checkpoint_callbacks()["last"])
    paths = {name: callback.best_model_path for name, callback in cli.checkpoint_callbacks().items()}
    results, epochs = {}, {}
    for name in plan.checkpoints:
        arguments = {"model": cli.model, "datamodule": cli.datamodule, "ckpt_path": paths[name], "verbose": False}
        (metrics,) = cli.trainer.test(**calibrated_for_the_checkpoint(cli.trainer, arguments))
        results[name] = {key: float(value) for key, value in metrics.items()}
        epochs[name] = int(torch.load(paths[name], map_location="cpu", weights_only=True)["epoch"])
    return RunRecord(
        setting=job.setting,
        label=job.row.label,
        method=job.row.method,
        seed=job.seed,
        k=cli.model.k,
        trained_ks=list(cli.model.ks),
        per_k=job.row.per_k,
        eval_ks=list(cli.model.eval_ks),
        results=results,
        epochs=epochs,
        train_top1_acc=recorder.train_top1_acc,
        epoch_metrics=recorder.epoch_metrics,
        seconds=time.perf_counter() - started,
        key=plan.key(job),
    )


def _run_job_in_worker(threads: int, plan: StudyPlan, job: Job, root: str) -> RunRecord:
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    return run_job(plan, job, root)


def run_jobs(
    plan: StudyPlan, done: dict[str, RunRecord], finished: Callable[[Job, RunRecord], None], parallel: int = 1
) -> list[RunRecord]:
    """Run every job of `plan` whose key `done` (saved runs by key) lacks, `parallel` at a time.

    Each new record goes to `finished` as soon as its run ends, and the run's folder (its checkpoints) is
    removed then: a long study holds one run's files at a time per process. Returns the records of every job
    of the plan, in plan order. With ``parallel > 1`` each training runs in its own process on
    ``cores / parallel`` threads.
    """
    jobs = plan.jobs()
    keys = [plan.key(job) for job in jobs]
    records = {key: done[key] for key in keys if key in done}
    if records:
        print(f"Resuming: {len(records)} of {len(jobs)} runs are in the journal, {len(jobs) - len(records)} to go.")

    def keep(job: Job, record: RunRecord, folder: str) -> None:
        # The folder goes before the record is journalled: a kill in between retrains the run, never leaves a
        # journalled run's checkpoints behind.
        shutil.rmtree(folder, ignore_errors=True)
        records[plan.key(job)] = record
        finished(job, record)

    with tempfile.TemporaryDirectory(prefix="avgk-compare-") as root:
        # Every job gets a folder of its own: parallel jobs must not pick the same run directory.
        pending = [
            (job, str(Path(root) / f"job_{index}")) for index, job in enumerate(jobs) if keys[index] not in records
        ]
        if parallel == 1:
            for job, folder in pending:
                keep(job, run_job(plan, job, folder), folder)
        else:
            threads = max(1, (os.cpu_count() or 1) // parallel)
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=context, max_tasks_per_child=1) as pool:
                futures = {
                    pool.submit(_run_job_in_worker, threads, plan, job, folder): (job, folder)
                    for job, folder in pending
                }
                for future in concurrent.futures.as_completed(futures):
                    job, folder = futures[future]
                    keep(job, future.result(), folder)
    return [records[key] for key in keys]
