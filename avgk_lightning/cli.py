"""The LightningCLI of avgk-lightning: always-on callbacks, argument links and versioned run directories."""

from __future__ import annotations

import netrc
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from avgk_lightning.callbacks import BestAndLastCheckpoint, PseudoLabelThreshold
from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.errors import InvalidInputError, MissingFileError, find_input_error
from avgk_lightning.metrics import format_k
from avgk_lightning.module import TwoHeadModule
from avgk_lightning.plots import TestPlots
from avgk_lightning.prediction import SetPredictionWriter

__all__ = ["AverageKCLI", "VersionedSaveConfigCallback", "latest_last_checkpoint", "new_run_dir", "run_cli"]

_RUN_DIR_VARIABLE = "AVGK_RUN_DIR"
_WANDB_HOST = "https://api.wandb.ai"
# Arguments taken from the command line even under --ckpt_path: the optimizer and scheduler factories
# (not saved in checkpoints) and the use-time choices of test and predict.
_NOT_IN_CHECKPOINT = ("optimizer", "lr_scheduler", "predict_k", "frequency_boundaries")
# Set in processes that a launcher (torchrun, SLURM, Lightning's DDP) started as one rank of a job.
_RANK_VARIABLES = ("LOCAL_RANK", "RANK", "SLURM_PROCID")


def new_run_dir(root: str | os.PathLike) -> Path:
    """The first ``root/version_N`` that does not exist yet: runs never overwrite each other.

    Example:
        >>> import tempfile
        >>> new_run_dir(tempfile.mkdtemp()).name
        'version_0'
    """
    root = Path(root)
    version = 0
    while (root / f"version_{version}").exists():
        version += 1
    return root / f"version_{version}"


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


class VersionedSaveConfigCallback(SaveConfigCallback):
    """Saves the run's config as ``config.yaml``, or ``config-1.yaml``, ... when resuming in the same directory."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        stem, suffix = os.path.splitext(self.config_filename)
        name, version = self.config_filename, 0
        while (log_dir / name).exists():
            version += 1
            name = f"{stem}-{version}{suffix}"
        self.config_filename = name
        super().setup(trainer, pl_module, stage)


def _wandb_online_problem() -> str | None:
    """Why W&B cannot log online from here (no API key, or its server unreachable), or None."""
    if os.environ.get("WANDB_API_KEY"):
        has_key = True
    else:
        try:
            has_key = netrc.netrc().authenticators(urlparse(_WANDB_HOST).hostname) is not None
        except (FileNotFoundError, netrc.NetrcParseError):
            has_key = False
    if not has_key:
        return "no W&B API key (run `wandb login` or set WANDB_API_KEY)"
    host = urlparse(os.environ.get("WANDB_BASE_URL", _WANDB_HOST))
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=3).close()
    except OSError as error:
        return f"{host.hostname} is unreachable ({error})"
    return None


def _wandb_offline_unless_reachable(init_args: Any) -> None:
    """Turn an online W&B logger offline, with a warning, when it could not log online: never hang."""
    if getattr(init_args, "offline", False) or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    problem = _wandb_online_problem()
    if problem is not None:
        rank_zero_warn(
            f"W&B cannot log online: {problem}. Logging offline instead; sync the run later with `wandb sync`."
        )
        init_args.offline = True


def _plain(value: Any) -> Any:
    """A config value as plain data, for comparisons (jsonargparse Namespaces to dicts)."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _as_list(counts: Any) -> list[int]:
    return [int(count) for count in counts]


def _monitor_name(k: float) -> str:
    return f"val/avgk_acc@{format_k(k)}"


class AverageKCLI(LightningCLI):
    """LightningCLI with the pseudo-label callback and the checkpoint callback always configured.

    * ``--pseudo_labels.scope`` configures :class:`~avgk_lightning.PseudoLabelThreshold`;
    * ``--checkpoint.*`` configures :class:`~avgk_lightning.callbacks.BestAndLastCheckpoint`, a
      ``ModelCheckpoint`` (default: keep ``best.ckpt``, the epoch with the best ``val/avgk_acc@K`` for the
      model's `k`, and ``last.ckpt``, the latest epoch);
    * ``--predictions.output`` / ``--predictions.overwrite`` configure the
      :class:`~avgk_lightning.prediction.SetPredictionWriter` of ``predict`` (default
      ``<run dir>/predictions.jsonl``);
    * ``--plots.enabled`` switches the :class:`~avgk_lightning.plots.TestPlots` of ``test`` (PNG files in
      ``<run dir>/plots/``, images in W&B);
    * ``data.num_classes``, ``data.class_names`` and ``data.class_counts`` are linked into the model;
    * every run writes into a new ``<trainer.default_root_dir>/version_N`` (its config, checkpoints and
      logs), so nothing of an earlier run is overwritten. Processes that Lightning's DDP launcher
      starts share the directory of rank 0 (``AVGK_RUN_DIR``); ranks started by torchrun or SLURM use
      ``default_root_dir`` as given (pick a new one per job);
    * ``--ckpt_path last`` resumes the newest run that has a ``last.ckpt``: ``fit`` continues in that
      run's directory, the other commands start a new one.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(PseudoLabelThreshold, "pseudo_labels")
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SetPredictionWriter, "predictions")
        parser.add_lightning_class_args(TestPlots, "plots")
        parser.set_defaults({"checkpoint.filename": "best", "checkpoint.mode": "max", "checkpoint.save_last": True})
        parser.link_arguments("model.init_args.k", "checkpoint.monitor", compute_fn=_monitor_name)
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments(
            "data.class_counts", "model.init_args.class_counts", compute_fn=_as_list, apply_on="instantiate"
        )

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's arguments by the checkpoint's hyperparameters: say what changed.

        A different `method` is an error (the checkpoint's heads were trained for another loss); any
        other argument the checkpoint overrides is named in a warning, so nothing is dropped silently.
        """
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].get("model") if subcommand else None
        given = {} if before is None else dict(vars(before.get("init_args") or {}))
        super()._parse_ckpt_path()
        if before is None:
            return
        init_args = self.config[subcommand].model.get("init_args")
        # The optimizer and scheduler factories are not saved in the checkpoint (Lightning's parse resets
        # them to their defaults), and predict_k / frequency_boundaries are choices of this command:
        # keep what was asked.
        for name in _NOT_IN_CHECKPOINT:
            if init_args is not None and name in given:
                setattr(init_args, name, given[name])
        after = dict(vars(init_args or {}))
        linked = {"num_classes", "class_names", "class_counts"}
        changed = {
            name: (given[name], after[name])
            for name in given
            if name not in linked and name in after and _plain(given[name]) != _plain(after[name])
        }
        if "method" in changed:
            raise InvalidInputError(
                f"The checkpoint {self.config[subcommand].ckpt_path} was trained with method="
                f"{changed['method'][1]!r}, but method={changed['method'][0]!r} was asked: pass "
                f"--model.init_args.method {changed['method'][1]} or a checkpoint of that method."
            )
        if changed:
            rank_zero_warn(
                "--ckpt_path: the model's arguments come from the checkpoint's hyperparameters: "
                + ", ".join(f"{name}={new!r} (not {old!r})" for name, (old, new) in changed.items())
            )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or "runs"
        resume_dir = None
        if config.get("ckpt_path") == "last":
            last = latest_last_checkpoint(root)
            config.ckpt_path = str(last)
            resume_dir = last.parent.parent if self.subcommand == "fit" else None  # fit continues in place
        if any(os.environ.get(name) for name in _RANK_VARIABLES):
            run_dir = Path(os.environ.get(_RUN_DIR_VARIABLE) or resume_dir or root)
        else:
            run_dir = resume_dir or new_run_dir(root)
            os.environ[_RUN_DIR_VARIABLE] = str(run_dir)  # inherited by the DDP processes Lightning starts
        config.trainer.default_root_dir = str(run_dir)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(run_dir / "checkpoints")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and getattr(init_args, "save_dir", None) in (None, "", "."):
                init_args.save_dir = str(run_dir)
            if init_args is not None and str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
                _wandb_offline_unless_reachable(init_args)

    def _finish_loggers(self) -> None:
        # Close W&B runs so that the next run of the same Python process (a notebook, a test) starts its own.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    def after_validate(self) -> None:
        self._finish_loggers()

    def after_test(self) -> None:
        self._finish_loggers()

    def after_predict(self) -> None:
        self._finish_loggers()

    def after_fit(self) -> None:
        self._finish_loggers()
        checkpoint = self.trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            rank_zero_info(
                f"Best checkpoint ({checkpoint.monitor} = {float(checkpoint.best_model_score):.4f}): "
                f"{checkpoint.best_model_path}\nTest it with: python train.py test --config CONFIG "
                f"--ckpt_path {checkpoint.best_model_path}"
            )


def _user_message(error: InvalidInputError) -> str:
    message = str(error).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:  # re-raised by a DataLoader worker
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message


def run_cli(args: list[str] | None = None, run: bool = True) -> AverageKCLI:
    """Run ``train.py``'s command line: any TwoHeadModule and AverageKDataModule subclass by class path.

    `args` replaces ``sys.argv[1:]`` (e.g. from a notebook or a test):
    ``run_cli(["fit", "--config", "configs/synthetic_two_head.yaml"])``. With ``run=False`` the
    arguments hold no subcommand and the CLI only builds ``cli.trainer``, ``cli.model`` and
    ``cli.datamodule`` for the caller to run (as ``benchmarks/compare.py`` does). A mistake in what the user
    wrote (an :class:`~avgk_lightning.errors.InvalidInputError`, however deeply wrapped) ends the
    run with its message alone on standard error and exit status 2, not a traceback.
    """
    try:
        return AverageKCLI(
            TwoHeadModule,
            AverageKDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=VersionedSaveConfigCallback,
            save_config_kwargs={"overwrite": False},
            args=args,
            run=run,
        )
    except Exception as error:
        cause = find_input_error(error)
        if cause is None:
            raise
        print(f"error: {_user_message(cause)}", file=sys.stderr)
        raise SystemExit(2) from None
