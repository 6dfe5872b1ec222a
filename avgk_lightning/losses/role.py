r"""ROLE (Cole et al.): the classifier and a per-sample label-estimate matrix teach each other."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avgk_lightning.epoch_state import EpochState
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.losses.base import AverageKLoss
from avgk_lightning.losses.baselines import _observed, expected_positive_regulariser

__all__ = ["LabelEstimates", "RegularisedOnlineLabelEstimationLoss"]


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


class LabelEstimates(EpochState):
    r"""ROLE's estimate logits :math:`Z` (one row per training sample), merged across processes every epoch.

    Rows start uniform in :math:`[-\mathrm{logit}(0.6), \mathrm{logit}(0.6)]` (a fixed seed: identical on
    every process); the observed label's entry is set to :math:`\mathrm{logit}(0.995)` when a sample is
    first seen. Each process writes the rows of its own samples; :meth:`merge` gives every row updated
    by some process the mean of those updates (a sample repeated by the sampler's padding is updated by
    several). Saved in checkpoints: N·C float32 values (1 GB for Pl@ntNet-300K).

    Example:
        >>> estimates = LabelEstimates()
        >>> estimates.setup(num_samples=4)
        >>> rows = estimates.rows(torch.tensor([1, 3]), torch.tensor([0, 2]), num_classes=3, device="cpu")
        >>> round(float(torch.sigmoid(rows[0, 0])), 3)  # first visit: the observed label at 0.995
        0.995
    """

    _INITIAL_SPREAD = 0.6
    _INITIAL_POSITIVE = 0.995

    def __init__(self) -> None:
        self.logits: Tensor | None = None
        self.seen: Tensor | None = None
        self._updated: Tensor | None = None  # rows this process changed since the last merge
        self._pending = False  # some batch was trained since the last merge (the same on every process)
        self._num_samples: int | None = None  # rows of the matrix, from setup or a checkpoint

    def setup(self, num_samples: int) -> None:
        """Size the matrix for `num_samples` training samples (it is created at the first batch)."""
        if self.logits is not None and self.logits.shape[0] == num_samples:
            return
        if self.logits is not None:
            raise InvalidInputError(
                f"The ROLE label estimates have {self.logits.shape[0]} rows (one per training sample of "
                f"the checkpoint), but the training split has {num_samples} samples: resume on the same data."
            )
        self._num_samples = num_samples

    def _initialise(self, num_classes: int, device: torch.device | str) -> None:
        if self._num_samples is None:
            raise InvalidInputError("ROLE: call setup_samples(num_samples) before training")
        generator = torch.Generator().manual_seed(0)
        spread = _logit(self._INITIAL_SPREAD)
        logits = (torch.rand(self._num_samples, num_classes, generator=generator) * 2 - 1) * spread
        self.logits = logits.to(device)
        self.seen = torch.zeros(self._num_samples, dtype=torch.bool, device=device)

    def rows(self, indices: Tensor, target: Tensor, num_classes: int, device: torch.device | str) -> Tensor:
        """The current estimate logits of samples `indices`, the observed label raised on a first visit."""
        if self.logits is None:
            self._initialise(num_classes, device)
        if self.logits.device != torch.device(device):
            self.logits, self.seen = self.logits.to(device), self.seen.to(device)
        if self._updated is None or self._updated.device != self.logits.device:
            self._updated = torch.zeros(self.logits.shape[0], dtype=torch.bool, device=self.logits.device)
        rows = self.logits[indices]
        first_visit = (~self.seen[indices]).unsqueeze(1) & _observed(target, num_classes)
        return torch.where(first_visit, torch.full_like(rows, _logit(self._INITIAL_POSITIVE)), rows)

    def write(self, indices: Tensor, rows: Tensor) -> None:
        """Store updated rows for samples `indices` (this process's part until the next merge)."""
        self.logits[indices] = rows
        self.seen[indices] = True
        self._updated[indices] = True
        self._pending = True

    def local_totals(self) -> Tensor | None:
        if not self._pending:
            return None
        updated = self._updated.to(self.logits.dtype).unsqueeze(1)
        return torch.cat([self.logits * updated, updated, self.seen.unsqueeze(1).float()], dim=1)

    def merge(self, totals: Tensor) -> None:
        counts = totals[:, -2:-1]
        merged = totals[:, :-2] / counts.clamp_min(1)
        self.logits = torch.where(counts > 0, merged, self.logits)
        self.seen = totals[:, -1] > 0
        self._updated.zero_()
        self._pending = False

    def state_dict(self) -> dict[str, Any]:
        if self.logits is None:
            return {}
        return {"estimate_logits": self.logits.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "estimate_logits" not in state:
            return
        saved_rows = state["estimate_logits"].shape[0]
        expected = saved_rows if self._num_samples is None else self._num_samples
        if saved_rows != expected:
            raise InvalidInputError(
                f"The checkpoint's ROLE label estimates have {saved_rows} rows (one per training sample), but the "
                f"training split has {expected} samples: resume on the data set the checkpoint was trained on."
            )
        self._num_samples = saved_rows
        device = self.logits.device if self.logits is not None else "cpu"
        self.logits = state["estimate_logits"].to(device)
        self.seen = state["seen"].to(device)
        self._updated = None


class RegularisedOnlineLabelEstimationLoss(AverageKLoss):
    r"""ROLE: the classifier and a label-estimate matrix teach each other, with EPR on both.

    A matrix of estimate logits :math:`Z` (one row per training sample, :math:`\hat y = \sigma(Z)`,
    :class:`LabelEstimates`) is learned jointly. Per entry, classifier and estimator each get half of
    the observed-positive term and half of the BCE against the other's detached output, plus half the
    EPR of each:

    .. math::
        \ell = \tfrac12[j = y](-\log g_j - \log \hat y_j) + \tfrac12\,\mathrm{BCE}(g_j, \bar{\hat y}_j)
        + \tfrac12\,\mathrm{BCE}(\hat y_j, \bar g_j) + \tfrac12(R(g) + R(\hat y))

    (bars: detached; R: :func:`~avgk_lightning.losses.expected_positive_regulariser`). The returned loss
    trains the network; the estimator's part (added to the logged value, detached) updates the batch's
    rows of :math:`Z` in place by one SGD step of `estimator_lr` on its per-entry gradient (the gradient
    of the batch loss times B·C, so the step does not depend on batch size or class count).

    Args:
        k: expected number of positives per sample in the regulariser (the module's K).
        estimator_lr: step size of the label estimator; default 1.0.

    Example:
        >>> loss = RegularisedOnlineLabelEstimationLoss(k=1.0)
        >>> loss.setup_samples(num_samples=10)
        >>> terms = loss(None, torch.zeros(2, 4), torch.tensor([0, 3]), sample_indices=torch.tensor([7, 2]))
        >>> sorted(terms), round(float(loss.estimates.logits[7, 0]), 3) < _logit(0.995)  # row 7 was updated
        (['estimator', 'loss', 'positive', 'regulariser'], True)
    """

    name = "role"
    uses_sample_indices = True

    def __init__(self, k: float, estimator_lr: float = 1.0) -> None:
        super().__init__()
        if estimator_lr <= 0:
            raise InvalidInputError(f"Expected argument `estimator_lr` to be > 0, but got {estimator_lr!r}")
        self.k = float(k)
        self.estimator_lr = estimator_lr
        # Not buffers: kept out of the DDP broadcasts and the weights, saved through epoch_states().
        self.estimates = LabelEstimates()

    def setup_samples(self, num_samples: int) -> None:
        self.estimates.setup(num_samples)

    def epoch_states(self) -> dict[str, LabelEstimates]:
        return {"label_estimates": self.estimates}

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        if sample_indices is None:
            raise InvalidInputError("ROLE needs the dataset index of each training sample (`sample_indices`)")
        num_classes = multilabel_logits.shape[1]
        indices = sample_indices.long()
        observed = _observed(target, num_classes)
        rows = self.estimates.rows(indices, target, num_classes, multilabel_logits.device)

        logits = multilabel_logits.float()
        scores = logits.sigmoid()
        estimates = rows.sigmoid()
        positive = (-F.logsigmoid(logits) * observed).mean()
        cross = F.binary_cross_entropy_with_logits(logits, estimates)
        regulariser = expected_positive_regulariser(scores, self.k)
        classifier = 0.5 * positive + 0.5 * cross + 0.5 * regulariser

        with torch.enable_grad():
            estimate_rows = rows.detach().requires_grad_(True)
            estimator = (
                0.5 * (-F.logsigmoid(estimate_rows) * observed).mean()
                + 0.5 * F.binary_cross_entropy_with_logits(estimate_rows, scores.detach())
                + 0.5 * expected_positive_regulariser(estimate_rows.sigmoid(), self.k)
            )
            (gradient,) = torch.autograd.grad(estimator, estimate_rows)
        step = self.estimator_lr * gradient * gradient.numel()
        self.estimates.write(indices, (estimate_rows - step).detach())
        return {
            "loss": classifier + estimator.detach(),  # the whole ROLE objective; its gradient trains the network
            "positive": positive,
            "regulariser": regulariser,
            "estimator": estimator.detach(),
        }
