"""EvaluationSteps: the validation and test steps of TwoHeadModule, its λ_K calibration and its test report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from avgk_lightning.batch import Batch, without_padding
from avgk_lightning.metrics import EvaluationResult
from avgk_lightning.naming import monitor_name
from avgk_lightning.report import prediction_note, test_report

if TYPE_CHECKING:
    from avgk_lightning.evaluation import Calibration, Evaluation
    from avgk_lightning.losses import AverageKLoss
    from avgk_lightning.models import TwoHeadNetwork

__all__ = ["EvaluationSteps"]


class EvaluationSteps:
    """The evaluation hooks of :class:`~avgk_lightning.TwoHeadModule` (the Pl@ntNet-300K protocol).

    Each validation epoch calibrates λ_K on every head's scores for every K of ``eval_ks`` (kept in
    ``calibration`` from the epochs the trainer does not sanity-check); ``test`` applies them unchanged,
    logs, prints the report and keeps its results in ``test_results``. A part of the module (its base class
    beside ``LightningModule``); it reads the module's ``network``, ``evaluation``, ``calibration``, ``loss``,
    ``k``, ``eval_ks`` and ``coverages``, and, to say which head makes the predicted sets, ``predict_head``,
    ``predict_k``, ``prediction_head`` and ``evaluation_heads``.
    """

    network: TwoHeadNetwork
    evaluation: Evaluation
    calibration: Calibration
    loss: AverageKLoss
    k: float
    eval_ks: list[float]
    coverages: list[float]
    test_results: dict[str, EvaluationResult]
    predict_head: str | None
    predict_k: float
    prediction_head: Callable[..., str]
    evaluation_heads: list[str]

    def _evaluation_step(self, stage: str, batch: Batch | Sequence[Tensor]) -> None:
        batch = without_padding(Batch.of(batch))  # a process without samples of its own still steps
        scores = self.network.scores(batch.images, self.evaluation_heads)
        if batch.posteriors is not None and (stage == "val" or "oracle" in self.calibration.average_k):
            scores["oracle"] = batch.posteriors.float()
        self.evaluation.update(stage, scores, batch.target)

    def validation_step(self, batch: Batch | Sequence[Tensor], batch_idx: int) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: Batch | Sequence[Tensor], batch_idx: int) -> None:
        self._evaluation_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        results = self.evaluation.compute("val")
        logged = self.evaluation.logged("val", results)
        self.log_dict(logged, sync_dist=False)  # identical on every process: the states were gathered
        if self.trainer.sanity_checking:
            return
        for head, result in results.items():
            self.calibration.record(head, result)
        name = monitor_name(self.k).removeprefix("val/")
        keys = (f"val/{name}", f"val/softmax/{name}", f"val/oracle/{name}")
        rank_zero_info(
            f"Epoch {self.current_epoch}: " + ", ".join(f"{key} {logged[key]:.4f}" for key in keys if key in logged)
        )

    def on_test_epoch_start(self) -> None:
        self.evaluation.apply(self.calibration)
        self.test_results = {}

    def on_test_epoch_end(self) -> None:
        self.test_results = self.evaluation.compute("test")
        logged = self.evaluation.logged("test", self.test_results)
        self.log_dict(logged, sync_dist=False)
        if self.trainer.is_global_zero:
            set_head = self.loss.set_head
            report = test_report(
                self.test_results, logged, self.eval_ks, self.k, set_head, self.coverages, self.evaluation.multilabel_ks
            )
            accuracy = {head: self.calibration.accuracy.get(head, {}) for head in self.evaluation_heads}
            recorded = all(self.predict_k in values for values in accuracy.values())  # not in earlier checkpoints
            if self.predict_head == "validation" and len(accuracy) > 1 and recorded:
                report += "\n\n" + prediction_note(self.prediction_head(), self.predict_k, accuracy)
            rank_zero_info(report)
