"""Callbacks: PseudoLabelThreshold (λ_pl of the two-head loss) and PreemptionCheckpoint (``last.ckpt`` on SIGTERM)."""

from __future__ import annotations

import os
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from avgk_lightning.epoch_state import merge_across_processes
from avgk_lightning.pseudo_labels import (  # noqa: F401  (the histogram's names, kept importable from here)
    _HISTOGRAM_BINS,
    NonTrueScoreHistogram,
    PseudoLabelRule,
    PseudoLabelStatistics,
    PseudoLabelStep,
    _bin_indices,
    histogram_threshold,
)

__all__ = ["PreemptionCheckpoint", "PseudoLabelThreshold"]


class PseudoLabelThreshold(Callback):
    r"""Sets the pseudo-label threshold of the two-head loss from epoch-level softmax statistics.

    During each training epoch it accumulates a fixed-size histogram of the non-true softmax scores
    (over their float32 bit pattern, 2 MB whatever the data set size) and, at the end of the epoch,
    all-reduces it once across processes and sets λ_pl for the next epoch so that (K - 1)·N of the
    epoch's N·(L - 1) non-true scores lie above it (to within one bin, at most 0.05% of λ_pl). The
    first epoch, before any statistic exists, uses the batch rule (the B·(K - 1) largest non-true
    entries of each batch); ``scope="batch"`` keeps the batch rule throughout.

    Logged every epoch:

    * ``train/pseudo_label_set_size``: the realised mean number of positives (true label included) in
      the pseudo-labels used during the epoch. λ_pl is one epoch old, so this drifts from K while the
      model changes fast and tracks K as training settles.
    * ``train/pseudo_label_threshold``: with ``scope="epoch"``, the λ_pl computed from this epoch's
      statistics (used by the next epoch); with ``scope="batch"``, the mean of the batch thresholds.

    A module with a multi-label head per K (``k: [1.5, 2, 3]``) gets one λ_pl per K from the same
    histogram, and both values are logged per K (``train/pseudo_label_threshold@2``, ...).

    The threshold for the next epoch is saved in checkpoints and restored on resume; a checkpoint
    written in the middle of an epoch (``val_check_interval < 1``, ``every_n_train_steps``) also keeps
    the epoch's counts so far, so that the resumed run ends the epoch with the same λ_pl.

    Args:
        scope: ``"epoch"`` (default) or ``"batch"``.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[PseudoLabelThreshold(scope="epoch")], logger=False)
    """

    def __init__(self, scope: Literal["epoch", "batch"] = "epoch") -> None:
        self.statistics = PseudoLabelStatistics(scope)

    @property
    def scope(self) -> str:
        """``"epoch"`` or ``"batch"``: where λ_pl comes from."""
        return self.statistics.scope

    @property
    def threshold(self) -> float | None:
        """The λ_pl computed at the end of the last epoch (None before the first one, or with the batch rule)."""
        return self.statistics.threshold

    @staticmethod
    def _rule(pl_module: LightningModule) -> PseudoLabelRule | None:
        rule = getattr(pl_module, "pseudo_label_rule", None)
        return rule if isinstance(rule, PseudoLabelRule) else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rule = self._rule(pl_module)
        if rule is not None and self.statistics.interrupted_epoch is not None:
            # Resumed from a checkpoint written in the middle of an epoch: Lightning does not start that
            # epoch again, so continue its λ_pl and its counts (kept on one process: they are the sum of all).
            rule.threshold = self.statistics.threshold
            self.statistics.resume_epoch(pl_module.device, keep_counts=trainer.global_rank == 0)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rule = self._rule(pl_module)
        if rule is None:
            return
        rule.threshold = self.statistics.threshold
        self.statistics.start_epoch(rule.k, pl_module.device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = outputs.get("pseudo_labels") if isinstance(outputs, dict) else None
        if isinstance(step, PseudoLabelStep) and self._rule(pl_module) is not None:
            self.statistics.update(step)
        if batch_idx + 1 == trainer.num_training_batches:
            # The epoch's last batch: merge now, before the validation and the checkpoints that Lightning
            # runs ahead of on_train_epoch_end (check_val_every_n_epoch > 1, val_check_interval < 1).
            self._merge(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._merge(trainer, pl_module)  # when the epoch had no known length (or stopped early)

    def _merge(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._rule(pl_module) is None or not self.statistics.accumulating:
            return
        merge_across_processes(self.statistics, lambda totals: trainer.strategy.reduce(totals, reduce_op="sum"))
        logged = self.statistics.logged()
        if logged:
            # One value per epoch, already merged: a batch size of 1 (not one inferred from the batch's tensors).
            pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return self.statistics.state_dict()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Every process writes this checkpoint's state (Lightning saves rank 0's): a checkpoint in the middle
        # of an epoch also keeps what the epoch has counted so far, summed over the processes.
        so_far = self.statistics.epoch_so_far(lambda totals: trainer.strategy.reduce(totals, reduce_op="sum"))
        if so_far is not None and self.state_key in checkpoint.get("callbacks", {}):
            checkpoint["callbacks"][self.state_key]["interrupted_epoch"] = so_far

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.statistics.load_state_dict(state_dict)


class PreemptionCheckpoint(Callback):
    """Writes ``last.ckpt`` when a scheduler pre-empts training (SIGTERM), so ``--ckpt_path last`` resumes there.

    Lightning stops after the training batch under way when the process gets SIGTERM; this callback then
    saves the run at that batch into ``dirpath/filename.ckpt``, the file the CLI's ``--last_checkpoint``
    (a stock ``ModelCheckpoint`` keeping the latest epoch) writes at every epoch end, and the resumed run
    continues the epoch exactly (:mod:`avgk_lightning.resume`). A SIGTERM during validation saves nothing:
    the latest checkpoint stays the one to resume. The CLI configures it as ``--preemption.*``.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from lightning.pytorch.callbacks import ModelCheckpoint
        >>> latest = ModelCheckpoint(dirpath="runs/checkpoints", filename="last", enable_version_counter=False)
        >>> trainer = Trainer(callbacks=[latest, PreemptionCheckpoint(dirpath="runs/checkpoints")], logger=False)
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        super().__init__()
        self.dirpath = dirpath
        self.filename = filename

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or self.dirpath is None:
            return
        if not trainer.training:
            rank_zero_warn(f"Stopped by SIGTERM during {trainer.state.stage}: resume with --ckpt_path last.")
            return
        path = os.path.join(self.dirpath, f"{self.filename}{ModelCheckpoint.FILE_EXTENSION}")
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"Stopped by SIGTERM at epoch {trainer.current_epoch}, global step {trainer.global_step}: saved {path}. "
            "Resume with the same command and --ckpt_path last."
        )
