"""The LightningCLI of avgk-lightning: always-on callbacks, argument links, run directories and error lines."""

from __future__ import annotations

import signal
import sys
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from avgk_lightning.atomic import AtomicCheckpointIO
from avgk_lightning.callbacks import PreemptionCheckpoint, PseudoLabelThreshold
from avgk_lightning.cli.calibration import calibrated_for_the_checkpoint, validate_final_weights
from avgk_lightning.cli.checkpoint_args import check_checkpoint_path, reconcile_model_arguments
from avgk_lightning.cli.run_dirs import VersionedSaveConfigCallback, latest_last_checkpoint, resolve_run_dir
from avgk_lightning.cli.wandb_offline import offline_unless_reachable
from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.errors import InvalidInputError, find_input_error
from avgk_lightning.module import TwoHeadModule
from avgk_lightning.naming import monitor_name
from avgk_lightning.plots import TestPlots
from avgk_lightning.prediction import SetPredictionWriter
from avgk_lightning.wandb_tables import TestTables

__all__ = ["AverageKCLI", "run_cli"]


def _as_list(counts: Any) -> list[int]:
    return [int(count) for count in counts]


class AverageKCLI(LightningCLI):
    """LightningCLI with the pseudo-label callback and the checkpoint callback always configured.

    * ``--pseudo_labels.scope`` configures :class:`~avgk_lightning.PseudoLabelThreshold`;
    * ``--checkpoint.*`` configures the ``ModelCheckpoint`` of ``best.ckpt`` (the epoch with the best
      ``val/avgk_acc@K`` for the model's first `k`), ``--last_checkpoint.*`` the one of ``last.ckpt`` (the
      latest state, written at each checkpointing step of the first: ``--checkpoint.every_n_train_steps``
      and the validation schedule; ``--last_checkpoint.save_top_k 0`` keeps none), and
      ``--preemption.*`` the :class:`~avgk_lightning.callbacks.PreemptionCheckpoint` that writes ``last.ckpt``
      at the batch where a scheduler's SIGTERM stops training;
    * ``--predictions.output`` / ``--predictions.overwrite`` configure the
      :class:`~avgk_lightning.prediction.SetPredictionWriter` of ``predict`` (default
      ``<run dir>/predictions.jsonl``);
    * ``--plots.enabled`` switches the :class:`~avgk_lightning.plots.TestPlots` of ``test`` (PNG files in
      ``<run dir>/plots/``, images in W&B), ``--tables.enabled`` its
      :class:`~avgk_lightning.wandb_tables.TestTables` (results, per-class results and set sizes in W&B);
    * ``data.num_classes``, ``data.class_names`` and ``data.class_counts`` are linked into the model;
    * every run writes into a new ``<trainer.default_root_dir>/version_N`` (its config, checkpoints and
      logs), so nothing of an earlier run is overwritten (:mod:`avgk_lightning.cli.run_dirs`);
    * ``--ckpt_path`` is checked before use (:mod:`avgk_lightning.checkpoint`); ``--ckpt_path last``
      resumes the newest run that has a ``last.ckpt``: ``fit`` continues in that run's directory, the
      other commands start a new one;
    * an online W&B logger that cannot reach W&B logs offline (:mod:`avgk_lightning.cli.wandb_offline`).
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(PseudoLabelThreshold, "pseudo_labels")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(SetPredictionWriter, "predictions")
        parser.add_lightning_class_args(TestPlots, "plots")
        parser.add_lightning_class_args(TestTables, "tables")
        parser.set_defaults({"checkpoint.filename": "best", "checkpoint.mode": "max"})
        parser.set_defaults(_LATEST_EPOCH)
        for name in _SCHEDULE:  # last.ckpt is written at every checkpointing step of best.ckpt's callback
            parser.link_arguments(f"checkpoint.{name}", f"last_checkpoint.{name}")
        parser.link_arguments("model.init_args.k", "checkpoint.monitor", compute_fn=monitor_name)
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments(
            "data.class_counts", "model.init_args.class_counts", compute_fn=_as_list, apply_on="instantiate"
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, writing local checkpoints atomically (:class:`~avgk_lightning.atomic.AtomicCheckpointIO`)."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, then check ``--ckpt_path`` before Lightning reads its hyperparameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self._given_model_arguments: dict[str, Any] | None = None
        if subcommand:
            check_checkpoint_path(self.config[subcommand].get("ckpt_path"))
            model = self.config[subcommand].get("model")
            self._given_model_arguments = None if model is None else dict(vars(model.get("init_args") or {}))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self._given_model_arguments is not None:  # Lightning has put the checkpoint's hyperparameters in
            init_args = config.model.get("init_args")
            reconcile_model_arguments(self._given_model_arguments, init_args, config.get("ckpt_path"))
        _refuse_save_last(config)
        root = config.trainer.default_root_dir or "runs"
        resume_dir = None
        if config.get("ckpt_path") == "last":
            last = latest_last_checkpoint(root)
            check_checkpoint_path(str(last))
            config.ckpt_path = str(last)
            resume_dir = last.parent.parent if self.subcommand == "fit" else None  # fit continues in place
        run_dir = resolve_run_dir(root, resume_dir)
        config.trainer.default_root_dir = str(run_dir)
        for group in ("checkpoint", "last_checkpoint", "preemption"):
            if config[group].dirpath is None:
                config[group].dirpath = str(run_dir / "checkpoints")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and getattr(init_args, "save_dir", None) in (None, "", "."):
                init_args.save_dir = str(run_dir)
            if init_args is not None and str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
                offline_unless_reachable(init_args)

    def _finish_loggers(self) -> None:
        # Close W&B runs so that the next run of the same Python process (a notebook, a test) starts its own.
        if any(isinstance(logger, WandbLogger) for logger in self.trainer.loggers):
            import wandb

            if wandb.run is not None:
                wandb.finish()

    def test(self, **arguments: Any) -> Any:
        """``train.py test``: ``Trainer.test``, a checkpoint's λ_K calibrated again where they lag its weights."""
        return self.trainer.test(**calibrated_for_the_checkpoint(self.trainer, arguments))

    def predict(self, **arguments: Any) -> Any:
        """``train.py predict``: ``Trainer.predict``, a checkpoint's λ_K calibrated again where they lag its weights."""
        return self.trainer.predict(**calibrated_for_the_checkpoint(self.trainer, arguments))

    def after_validate(self) -> None:
        self._finish_loggers()

    def after_test(self) -> None:
        self._finish_loggers()

    def after_predict(self) -> None:
        self._finish_loggers()

    def after_fit(self) -> None:
        validate_final_weights(self.trainer, self.model, self.datamodule, self.checkpoint_callbacks()["last"])
        self._finish_loggers()
        best = self.checkpoint_callbacks()["best"]
        if best.best_model_path:
            rank_zero_info(
                f"Best checkpoint ({best.monitor} = {float(best.best_model_score):.4f}): "
                f"{best.best_model_path}\nTest it with: python train.py test --config CONFIG "
                f"--ckpt_path {best.best_model_path}"
            )

    def checkpoint_callbacks(self) -> dict[str, ModelCheckpoint]:
        """The ``ModelCheckpoint`` of ``best.ckpt`` and the one of ``last.ckpt``, as ``{"best": ..., "last": ...}``.

        After ``fit``, ``["best"].best_model_path`` is the best epoch's file and ``["last"].best_model_path``
        the latest epoch's (a ``ModelCheckpoint`` without a monitor keeps the newest file as its "best").
        """
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        return {"best": config["checkpoint"], "last": config["last_checkpoint"]}


# last.ckpt: a stock ModelCheckpoint without a monitor, overwritten in place, checkpointing when best.ckpt's does
# (Lightning 2.6's save_last=True rewrites last.ckpt only with a new best).
_LATEST_EPOCH = {"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False}
_SCHEDULE = ("every_n_train_steps", "every_n_epochs", "train_time_interval", "save_on_train_epoch_end")


def _refuse_save_last(config: Any) -> None:
    for group in ("checkpoint", "last_checkpoint"):
        if config[group].save_last:
            raise InvalidInputError(
                f"--{group}.save_last is not used by train.py: Lightning's save_last writes last.ckpt only when a new "
                "best is saved (a copy of best.ckpt), and last.ckpt is --last_checkpoint's, the latest epoch. Remove "
                f"{group}.save_last from the config (--last_checkpoint.save_top_k 0 keeps no last.ckpt)."
            )


def _user_message(error: InvalidInputError) -> str:
    message = str(error).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:  # re-raised by a DataLoader worker
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message


def main() -> None:
    """The ``avgk-train`` console script: ``train.py``'s command line (``avgk-train fit --config CONFIG``)."""
    run_cli()


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
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None  # stopped by a scheduler: not a success (0)
    except Exception as error:
        cause = find_input_error(error)
        if cause is None:
            raise
        print(f"error: {_user_message(cause)}", file=sys.stderr)
        raise SystemExit(2) from None
