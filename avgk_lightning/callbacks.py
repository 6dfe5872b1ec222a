"""PseudoLabelThreshold: the epoch-level pseudo-label threshold of the two-head loss."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from avgk_lightning.errors import InvalidInputError

__all__ = ["BestAndLastCheckpoint", "NonTrueScoreHistogram", "PseudoLabelThreshold", "histogram_threshold"]

# Histogram over the float32 bit pattern of the softmax scores: for non-negative floats the pattern
# is monotone in the value, so bins ordered by index are ordered by value. Dropping the 12 lowest bits
# keeps 11 mantissa bits: every bin spans at most 2**-11 (0.05%) of its lower edge. Scores lie in
# [0, 1], whose patterns end at 0x3F800000: 260,097 bins, 2 MB of int64 whatever the data set size.
_HISTOGRAM_SHIFT = 12
_HISTOGRAM_BINS = (0x3F800000 >> _HISTOGRAM_SHIFT) + 1


def _bin_edge(index: int) -> float:
    """The smallest float32 value that falls in bin `index`."""
    return torch.tensor(index << _HISTOGRAM_SHIFT, dtype=torch.int32).view(torch.float32).item()


def _bin_indices(scores: Tensor) -> Tensor:
    """The int32 bin of each score (NaN and anything above 1 land in the top bin, negatives in bin 0)."""
    patterns = scores.detach().float().contiguous().view(torch.int32) >> _HISTOGRAM_SHIFT
    return patterns.clamp_(0, _HISTOGRAM_BINS - 1)


def histogram_threshold(histogram: Tensor, count: int) -> float:
    """Threshold with `count` of the histogrammed scores above it, interpolated inside the boundary bin.

    `histogram` counts scores per bin of their float32 bit pattern (see :class:`PseudoLabelThreshold`).
    The scores above the returned value number `count` up to the content of one bin, whose width is at
    most 0.05% of its value; inside that bin the scores are taken as evenly spread.

    Example:
        >>> scores = torch.tensor([0.9, 0.6, 0.3, 0.1])
        >>> histogram = torch.zeros(_HISTOGRAM_BINS, dtype=torch.long).index_add_(
        ...     0, _bin_indices(scores), torch.ones(4, dtype=torch.long))
        >>> 0.3 < histogram_threshold(histogram, 2) <= 0.6
        True
    """
    total = int(histogram.sum())
    if count <= 0:
        return float("inf")
    if count >= total:
        return 0.0
    at_or_above = histogram.flip(0).cumsum(0).flip(0)  # scores in this bin or higher ones
    boundary = int((at_or_above >= count).nonzero().max())
    in_bin = int(histogram[boundary])
    needed = count - (int(at_or_above[boundary]) - in_bin)  # in (0, in_bin]
    lower, upper = _bin_edge(boundary), _bin_edge(boundary + 1)
    return upper - (upper - lower) * needed / in_bin


class NonTrueScoreHistogram:
    """The epoch statistic of :class:`PseudoLabelThreshold`: counts of the non-true softmax scores per bin.

    A fixed-size int64 tensor (:attr:`counts`, 2 MB) whatever the number of scores streamed through
    :meth:`update`; :meth:`threshold` reads the value with a given number of scores above it.

    Example:
        >>> histogram = NonTrueScoreHistogram()
        >>> histogram.update(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]]), torch.tensor([0, 1]))
        >>> 0.2 < histogram.threshold(1) <= 0.4  # one non-true score (0.4) above it
        True
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        # One spare bin past the last one collects the true-class entries, which the statistic excludes.
        self._bins = torch.zeros(_HISTOGRAM_BINS + 1, dtype=torch.long, device=device)
        self._one = torch.ones(1, dtype=torch.long, device=device)

    @property
    def counts(self) -> Tensor:
        """The non-true scores counted per bin (int64, one entry per bin)."""
        return self._bins[:_HISTOGRAM_BINS]

    def update(self, softmax_probs: Tensor, target: Tensor) -> None:
        """Add the non-true entries of a (B, L) batch of softmax scores."""
        # Four kernels: the bins (shift, clamp), the true entries sent to the spare bin, one scatter-add.
        bins = _bin_indices(softmax_probs)
        bins.scatter_(1, target.long().unsqueeze(1), _HISTOGRAM_BINS)
        self._bins.index_add_(0, bins.view(-1), self._one.expand(bins.numel()))

    def threshold(self, count: int) -> float:
        """The value with `count` of the scores seen above it (see :func:`histogram_threshold`)."""
        return histogram_threshold(self.counts, count)

    @property
    def nbytes(self) -> int:
        """The statistic's memory: the bins, the spare bin and the constant one."""
        return (self._bins.numel() + self._one.numel()) * self._bins.element_size()


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
        if scope not in ("epoch", "batch"):
            raise InvalidInputError(f"Expected argument `scope` to be 'epoch' or 'batch', but got {scope!r}")
        self.scope = scope
        self.threshold: float | None = None
        self._histogram: NonTrueScoreHistogram | None = None
        self._totals: Tensor | None = None  # samples, pseudo-label positives, sum of batch thresholds, batches

    @staticmethod
    def _active(pl_module: LightningModule) -> bool:
        loss = getattr(pl_module, "loss", None)
        return bool(getattr(loss, "uses_pseudo_labels", False))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(pl_module):
            return
        pl_module.pseudo_label_threshold = self.threshold if self.scope == "epoch" else None
        if self.scope == "epoch":
            self._histogram = NonTrueScoreHistogram(pl_module.device)
        self._totals = torch.zeros(4, dtype=torch.float64, device=pl_module.device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._totals is None or not isinstance(outputs, dict) or "softmax_probs" not in outputs:
            return
        probs, target = outputs["softmax_probs"], outputs["target"]
        if self._histogram is not None:
            self._histogram.update(probs, target)
        self._totals[0] += target.shape[0]
        self._totals[1] += outputs["pseudo_label_positives"]
        self._totals[2] += outputs["pseudo_label_threshold"]
        self._totals[3] += 1

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._totals is None:
            return
        # One all-reduce per epoch: the totals travel with the histogram (exact integer counts).
        if self._histogram is None:
            payload = trainer.strategy.reduce(self._totals, reduce_op="sum")
        else:
            payload = trainer.strategy.reduce(
                torch.cat([self._histogram.counts, self._totals.round().long()]), reduce_op="sum"
            )
        samples, positives, threshold_sum, batches = (float(value) for value in payload[-4:])
        histogram = None if self._histogram is None else payload[:-4]
        self._histogram, self._totals = None, None
        if samples == 0:
            return
        if histogram is not None:
            self.threshold = histogram_threshold(histogram, round((pl_module.k - 1) * samples))
            logged_threshold = self.threshold
        else:
            logged_threshold = threshold_sum / batches
        pl_module.log_dict(
            {
                "train/pseudo_label_threshold": float(logged_threshold),
                "train/pseudo_label_set_size": positives / samples,
            },
            on_epoch=True,
            sync_dist=False,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "threshold": self.threshold}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.threshold = state_dict["threshold"]


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
