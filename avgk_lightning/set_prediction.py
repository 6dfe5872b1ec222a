"""SetPrediction: the sets a trained TwoHeadModule predicts (``predict``, :meth:`predict_sets`, the exports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from avgk_lightning.batch import Batch
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.functional import average_k_sets, ordered_sets
from avgk_lightning.naming import format_k

if TYPE_CHECKING:
    from avgk_lightning.evaluation import Calibration
    from avgk_lightning.losses import AverageKLoss
    from avgk_lightning.models import TwoHeadNetwork

__all__ = ["SetPrediction"]


class SetPrediction:
    """The set prediction of :class:`~avgk_lightning.TwoHeadModule`: which head, which λ_K, which sets.

    A part of the module (its base class beside ``LightningModule``), kept apart because it is the whole of
    what a trained model does at use time. It reads the module's ``network``, ``loss``, ``calibration``,
    ``ks``, ``predict_k``, ``predict_head``, ``evaluation_heads``, ``class_names`` and ``num_classes``.
    """

    network: TwoHeadNetwork
    loss: AverageKLoss
    calibration: Calibration
    ks: tuple[float, ...]
    predict_k: float
    predict_head: str | None
    evaluation_heads: list[str]
    class_names: list[str] | None
    num_classes: int

    def prediction_head(self, k: float | None = None, argument: str = "predict_k") -> str:
        """The head whose sets are predicted at `k` (default `predict_k`): see the `predict_head` argument.

        With ``predict_head: validation``, the head of :attr:`evaluation_heads` with the higher validation
        average-K accuracy at `k` (the set head on a tie), as recorded with the checkpoint's λ_K. A model
        with a multi-label head per K serves other K from its softmax head only: there, ``validation``
        gives the softmax head, and a multi-label head is an error naming the trained K.

        Example:
            >>> from avgk_lightning import TwoHeadModule
            >>> model = TwoHeadModule(num_classes=5, k=2, predict_head="validation")
            >>> model.calibration.average_k = {"multilabel": {2.0: 0.31}, "softmax": {2.0: 0.42}}
            >>> model.calibration.accuracy = {"multilabel": {2.0: 0.90}, "softmax": {2.0: 0.93}}
            >>> model.prediction_head(), TwoHeadModule(num_classes=5, k=2, predict_head=None).prediction_head()
            ('softmax', 'multilabel')
        """
        k = self.predict_k if k is None else float(k)
        trained = len(self.ks) == 1 or k in self.ks
        if self.predict_head == "validation":
            heads = [head for head in self.evaluation_heads if trained or head != "multilabel"]
            return self.calibration.better_head(heads, k, argument)
        head = self.loss.set_head if self.predict_head is None else self.predict_head
        if head == "multilabel" and not trained:
            raise InvalidInputError(
                f"K={format_k(k)} (argument `{argument}`) was not trained: this model's multi-label heads serve K = "
                f"{', '.join(map(format_k, self.ks))}. Pick one of them, or predict_head softmax (calibrated at "
                "every K of eval_ks)."
            )
        return head

    def calibrated_threshold(self, k: float | None = None, argument: str = "predict_k") -> float:
        """The λ_K of the :meth:`prediction_head` calibrated on validation for `k` (default `predict_k`).

        Raises an error naming `argument` and listing the calibrated K when `k` was not calibrated.
        """
        k = self.predict_k if k is None else float(k)
        return self.calibration.threshold(self.prediction_head(k, argument), k, argument)

    def _head_scores(self, images: Tensor, head: str, k: float) -> Tensor:
        """(N, L) scores of `head` for `images`; of the multi-label head of `k` where there is one per K."""
        scores = self.network.scores(images, [head])[head]
        return scores if scores.ndim == 2 else scores[:, self.ks.index(float(k))]

    def predict_step(self, batch: Batch | Sequence[Tensor] | Tensor, batch_idx: int) -> dict[str, Any]:
        """Scores of the :meth:`prediction_head`, the boolean set mask at K = `predict_k`, that K and its λ_K."""
        threshold = self.calibrated_threshold()
        head = self.prediction_head()
        scores = self._head_scores(Batch.of(batch).images, head, self.predict_k)
        return {
            "scores": scores,
            "sets": average_k_sets(scores, threshold),
            "k": self.predict_k,
            "threshold": threshold,
        }

    @torch.no_grad()
    def predict_sets(self, images: Tensor, k: float | None = None) -> list[list[int]]:
        """The predicted set of each image as class indices ordered by decreasing score, at the λ_K of `k`.

        `images` is a (N, C, H, W) batch already transformed as in evaluation; `k` defaults to
        `predict_k` and must be one of the calibrated K (see :meth:`calibrated_threshold`).

        Example (with a trained model): ``model.predict_sets(images, k=3)`` -> ``[[4, 17], [8], ...]``.
        """
        k = self.predict_k if k is None else float(k)
        threshold = self.calibrated_threshold(k)
        head = self.prediction_head(k)
        was_training = self.training
        self.eval()
        try:
            scores = self._head_scores(images.to(self.device), head, k)
        finally:
            self.train(was_training)
        return ordered_sets(scores, threshold)

    def predict_set_names(self, images: Tensor, k: float | None = None) -> list[list[str]]:
        """:meth:`predict_sets` with class names (the data module's, or the class indices as text)."""
        names = self.class_names or [str(index) for index in range(self.num_classes)]
        return [[names[index] for index in indices] for indices in self.predict_sets(images, k)]
