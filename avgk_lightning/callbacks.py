"""Callbacks: PseudoLabelThreshold (λ_pl of the two-head loss) and BestAndLastCheckpoint."""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

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

__all__ = ["BestAndLastCheckpoint", "PseudoLabelThreshold"]


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

    The threshold for the next epoch is saved in checkpoints and restored on resume.

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

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._rule(pl_module) is None or not self.statistics.accumulating:
            return
        merge_across_processes(self.statistics, lambda totals: trainer.strategy.reduce(totals, reduce_op="sum"))
        if self.statistics.set_size is None:
            return
        pl_module.log_dict(
            {
                "train/pseudo_label_threshold": float(self.statistics.logged_threshold),
                "train/pseudo_label_set_size": self.statistics.set_size,
            },
            on_epoch=True,
            sync_dist=False,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.statistics.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.statistics.load_state_dict(state_dict)


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (``save_last=True``) holds the latest epoch, on every Lightning.

    Since Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint is saved
    at the same step: with ``save_top_k=1`` it is a copy of the best epoch, and resuming from it, or
    testing "the last epoch", silently goes back to the best one. This subclass also writes it after
    checkpointing step (training epoch or validation end, as ModelCheckpoint decides) that saved nothing, so
    ``last.ckpt`` is always the latest epoch.
    Everything else is ``ModelCheckpoint``'s (the CLI's ``--checkpoint.*`` arguments).

    Example:
        >>> checkpoint = BestAndLastCheckpoint(monitor="val/avgk_acc@2", mode="max", filename="best", save_last=True)
    """

    def _save_last_if_not_saved(self, trainer: Trainer) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)
