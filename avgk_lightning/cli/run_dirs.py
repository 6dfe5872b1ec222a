"""Run directories: every run writes into a new ``<root>/version_N``; resumed runs version their config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback

from avgk_lightning.errors import MissingFileError
from avgk_lightning.paths import first_free, free_path

__all__ = ["VersionedSaveConfigCallback", "latest_last_checkpoint", "new_run_dir", "resolve_run_dir"]

RUN_DIR_VARIABLE = "AVGK_RUN_DIR"
# Set in processes that a launcher (torchrun, SLURM, Lightning's DDP) started as one rank of a job.
_RANK_VARIABLES = ("LOCAL_RANK", "RANK", "SLURM_PROCID")


def new_run_dir(root: str | os.PathLike) -> Path:
    """The first ``root/version_N`` that does not exist yet: runs never overwrite each other.

    Example:
        >>> import tempfile
        >>> new_run_dir(tempfile.mkdtemp()).name
        'version_0'
    """
    return first_free(lambda number: Path(root) / f"version_{number}")


def latest_last_checkpoint(root: str | os.PathLike) -> Path:
    """``last.ckpt`` of the newest ``root/version_N`` that has one: what ``--ckpt_path last`` resumes.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for version in (0, 1, 2):
        ...     (root / f"version_{version}" / "checkpoints").mkdir(parents=True)
        >>> for version in (0, 1):
        ...     (root / f"version_{version}" / "checkpoints" / "last.ckpt").touch()
        >>> latest_last_checkpoint(root).relative_to(root).as_posix()
        'version_1/checkpoints/last.ckpt'
    """
    candidates = []
    for path in Path(root).glob("version_*/checkpoints/last.ckpt"):
        suffix = path.parent.parent.name.removeprefix("version_")
        if suffix.isdigit():
            candidates.append((int(suffix), path))
    if not candidates:
        raise MissingFileError(
            f"--ckpt_path last: no {Path(root)}/version_N/checkpoints/last.ckpt to resume from (argument "
            "`trainer.default_root_dir` names the folder of the runs). Pass the checkpoint's path instead."
        )
    return max(candidates)[1]


def resolve_run_dir(root: str | os.PathLike, resume_dir: Path | None) -> Path:
    """The directory of this run: `resume_dir` when continuing one, else a new ``root/version_N``.

    Processes that Lightning's DDP launcher starts inherit rank 0's choice (``AVGK_RUN_DIR``); ranks
    started by torchrun or SLURM use `root` as given.
    """
    if any(os.environ.get(name) for name in _RANK_VARIABLES):
        return Path(os.environ.get(RUN_DIR_VARIABLE) or resume_dir or root)
    run_dir = resume_dir or new_run_dir(root)
    os.environ[RUN_DIR_VARIABLE] = str(run_dir)  # inherited by the DDP processes Lightning starts
    return run_dir


class VersionedSaveConfigCallback(SaveConfigCallback):
    """Saves the run's config as ``config.yaml``, or ``config-1.yaml``, ... when resuming in the same directory."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.config_filename = free_path(log_dir / self.config_filename).name
        super().setup(trainer, pl_module, stage)
