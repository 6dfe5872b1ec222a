"""The average-K evaluation of a module: one metric per split and head, and the λ_K calibrated on validation.

Validation calibrates λ_K (and the coverage thresholds λ_c) on each head's scores and records them in a
:class:`Calibration`; test applies the recorded ones unchanged. Logged names follow
:mod:`avgk_lightning.naming`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from avgk_lightning.errors import InvalidInputError, StaleCalibrationError
from avgk_lightning.metrics import AverageKEvaluation, EvaluationResult
from avgk_lightning.naming import format_k, metric_name

__all__ = ["STAGES", "Calibration", "Evaluation"]

STAGES = ("val", "test")


@dataclass
class Calibration:
    """What validation calibrated, per head: λ_K per K, λ_c per target coverage, and the average-K accuracy per K.

    Example:
        >>> calibration = Calibration(average_k={"multilabel": {2.0: 0.31}})
        >>> calibration.threshold("multilabel", 2)
        0.31
        >>> calibration.average_k["softmax"] = {2.0: 0.42}
        >>> calibration.accuracy = {"multilabel": {2.0: 0.90}, "softmax": {2.0: 0.93}}
        >>> calibration.better_head(["multilabel", "softmax"], 2)
        'softmax'
    """

    average_k: dict[str, dict[float, float]] = field(default_factory=dict)
    coverage: dict[str, dict[float, float]] = field(default_factory=dict)
    accuracy: dict[str, dict[float, float]] = field(default_factory=dict)
    step: int | None = None
    """The training step of the weights that validation calibrated (None: not known)."""
    weights_step: int | None = None
    """The training step of the weights the module holds (None: not known)."""

    def record(self, head: str, result: EvaluationResult) -> None:
        """Keep the thresholds that validation calibrated for `head`, and its average-K accuracy at each K."""
        self.average_k[head] = dict(result.thresholds)
        self.coverage[head] = dict(result.coverage_thresholds)
        self.accuracy[head] = {k: float(result[f"avgk_acc@{format_k(k)}"]) for k in result.thresholds}
        self.step = self.weights_step

    def is_current(self) -> bool:
        """Whether the λ_K held were calibrated on the weights the module holds (True where either is unknown)."""
        return self.step is None or self.weights_step is None or self.step == self.weights_step

    def check_current(self) -> None:
        """Refuse λ_K calibrated on older weights than the module's: their sets would not average K.

        A checkpoint written between two validations (``every_n_train_steps``, ``val_check_interval``,
        ``check_val_every_n_epoch``, a stop by SIGTERM) holds the λ_K of the last validation beside newer
        weights. ``train.py test`` and ``predict`` calibrate such a checkpoint again on the validation split.

        Example:
            >>> Calibration(average_k={"multilabel": {2.0: 0.31}}, step=20, weights_step=30).check_current()
            Traceback (most recent call last):
            ...
            avgk_lightning.errors.StaleCalibrationError: The λ_K were calibrated on validation at training step 20, but the weights are from step 30 (a checkpoint written between two validations: every_n_train_steps, val_check_interval, check_val_every_n_epoch or a stop by SIGTERM), so its sets would not average K. Calibrate them for these weights first: `train.py test` and `predict` do it on the validation split; in Python, run `trainer.validate(model, datamodule)` before `test` or `predict`; to export, pass the last.ckpt of a finished `fit`.
        """
        if not self.is_current():
            raise StaleCalibrationError(
                f"The λ_K were calibrated on validation at training step {self.step}, but the weights are from step "
                f"{self.weights_step} (a checkpoint written between two validations: every_n_train_steps, "
                "val_check_interval, check_val_every_n_epoch or a stop by SIGTERM), so its sets would not average "
                "K. Calibrate them for these weights first: `train.py test` and `predict` do it on the validation "
                "split; in Python, run `trainer.validate(model, datamodule)` before `test` or `predict`; to export, "
                "pass the last.ckpt of a finished `fit`."
            )

    def better_head(self, heads: Sequence[str], k: float, argument: str = "predict_k") -> str:
        """Of `heads`, the one with the higher validation average-K accuracy at `k` (the first one on a tie).

        Raises the error of :meth:`threshold` where `k` was not calibrated for every head.
        """
        for head in heads:
            self.threshold(head, k, argument)
        missing = [head for head in heads if float(k) not in self.accuracy.get(head, {})]
        if missing:
            raise InvalidInputError(
                f"The checkpoint records no validation average-K accuracy of the {', '.join(missing)} head at "
                f"K={format_k(k)}, which `predict_head: validation` compares (checkpoints written before that option "
                f"existed lack it): pass `predict_head` {' or '.join(heads)}, or train again."
            )
        return max(heads, key=lambda head: (self.accuracy[head][float(k)], -list(heads).index(head)))

    def threshold(self, head: str, k: float, argument: str = "predict_k") -> float:
        """λ_K of `head` for `k`; an error naming `argument` and the calibrated K when there is none."""
        thresholds = self.average_k.get(head)
        self.check_current()
        if not thresholds:
            raise InvalidInputError(
                "No calibrated average-K thresholds: pass the checkpoint of a `fit` run (--ckpt_path PATH)."
            )
        if float(k) not in thresholds:
            calibrated = ", ".join(format_k(value) for value in sorted(thresholds))
            raise InvalidInputError(
                f"K={format_k(k)} (argument `{argument}`) was not calibrated: the checkpoint has λ_K for K = "
                f"{calibrated}. Pick one of them, or add it to `eval_ks` and train again."
            )
        return thresholds[float(k)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "thresholds": {head: dict(values) for head, values in self.average_k.items()},
            "coverage_thresholds": {head: dict(values) for head, values in self.coverage.items()},
            "validation_accuracy": {head: dict(values) for head, values in self.accuracy.items()},
            "calibrated_at_step": self.step,
        }

    def load_state_dict(self, state: Mapping[str, Any], weights_step: int | None = None) -> None:
        """Restore a :meth:`state_dict` saved beside weights of training step `weights_step`."""
        self.average_k = {head: dict(values) for head, values in state["thresholds"].items()}
        self.coverage = {head: dict(values) for head, values in state.get("coverage_thresholds", {}).items()}
        self.accuracy = {head: dict(values) for head, values in state.get("validation_accuracy", {}).items()}
        self.step = state.get("calibrated_at_step")  # None in checkpoints written before it was recorded
        self.weights_step = weights_step


class Evaluation(nn.Module):
    """One :class:`~avgk_lightning.metrics.AverageKEvaluation` per split (val, test) and evaluated head.

    `heads` are the heads the method trains, the set head first; the Bayes oracle (``"oracle"``) is
    evaluated too where the data provide posteriors. Test metrics add the diagnostics breakdowns.

    With `multilabel_ks` (a network with one multi-label head per K, whose ``multilabel`` scores are
    (B, n, L)), head i is evaluated at ``multilabel_ks[i]`` alone, and the coverage thresholds come from
    the first one; their results are merged into the one ``multilabel`` result, so that the names, the
    calibration and the report are those of a single head. Every other head is evaluated at every K of `ks`.

    Example:
        >>> import torch
        >>> evaluation = Evaluation(3, heads=["softmax"], ks=[1.5])
        >>> evaluation.update("val", {"softmax": torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.3, 0.2]])}, torch.tensor([1, 0]))
        >>> results = evaluation.compute("val")
        >>> evaluation.logged("val", results)["val/avgk_acc@1.5"]
        1.0
    """

    def __init__(
        self,
        num_classes: int,
        heads: Sequence[str],
        ks: Sequence[float],
        coverages: Sequence[float] = (),
        class_counts: Sequence[int] | None = None,
        frequency_boundaries: Sequence[int] = (20, 100),
        multilabel_ks: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.network_heads = list(heads)  # the network's evaluated heads, the set head first
        self.heads = [*heads, "oracle"]
        self.set_head = heads[0]
        self.multilabel_ks = None if multilabel_ks is None else [float(k) for k in multilabel_ks]
        test_options = {"class_counts": class_counts, "diagnostics": True, "frequency_boundaries": frequency_boundaries}
        metrics = {}
        for stage in STAGES:
            options = test_options if stage == "test" else {}
            for head in self.heads:
                if head == "multilabel" and self.multilabel_ks is not None:
                    for index, k in enumerate(self.multilabel_ks):
                        metrics[f"{stage}_{head}_{index}"] = AverageKEvaluation(
                            num_classes, [k], coverages=coverages if index == 0 else (), **options
                        )
                else:
                    metrics[f"{stage}_{head}"] = AverageKEvaluation(num_classes, ks, coverages=coverages, **options)
        self.metrics = nn.ModuleDict(metrics)

    def _parts(self, stage: str, head: str) -> list[AverageKEvaluation]:
        """The metrics of `head` at `stage`: one, or one per K for the multi-label heads of several K."""
        if head == "multilabel" and self.multilabel_ks is not None:
            return [self.metrics[f"{stage}_{head}_{index}"] for index in range(len(self.multilabel_ks))]
        return [self.metrics[f"{stage}_{head}"]]

    def update(self, stage: str, scores: Mapping[str, Tensor], target: Tensor) -> None:
        """Add a batch: the scores of each head (and of the oracle) with the true labels."""
        for head, head_scores in scores.items():
            parts = self._parts(stage, head)
            if len(parts) == 1 and head_scores.ndim == 2:
                parts[0].update(head_scores, target)
            else:
                for index, metric in enumerate(parts):
                    metric.update(head_scores[:, index], target)

    def compute(self, stage: str) -> dict[str, EvaluationResult]:
        """The result of every head that saw data at `stage`, in report order; the metrics are reset."""
        results = {}
        for head in self.heads:
            parts = [metric for metric in self._parts(stage, head) if metric.update_called]
            if parts:
                results[head] = _merged([metric.compute() for metric in parts])
                for metric in parts:
                    metric.reset()
        return results

    def apply(self, calibration: Calibration) -> None:
        """Make test use the calibrated thresholds (of every head calibrated; the others are not tested)."""
        calibration.check_current()
        missing = [head for head in self.network_heads if head not in calibration.average_k]
        if missing:
            raise InvalidInputError(
                f"No calibrated average-K thresholds for the {', '.join(missing)} head: `test` applies the λ_K "
                "calibrated on validation data. Pass the checkpoint of a `fit` run (--ckpt_path PATH) or run "
                "`validate` first in the same session."
            )
        for head, thresholds in calibration.average_k.items():
            for metric in self._parts("test", head):
                metric.set_thresholds(thresholds, calibration.coverage.get(head, {}))

    def logged(self, stage: str, results: Mapping[str, EvaluationResult]) -> dict[str, float]:
        """Every value of `results` under its logged name (:func:`~avgk_lightning.naming.metric_name`)."""
        return {
            metric_name(stage, head, self.set_head, name): float(value)
            for head, result in results.items()
            for name, value in result.items()
        }


def _merged(results: Sequence[EvaluationResult]) -> EvaluationResult:
    """One result from those of several heads evaluated at distinct K (each name comes from one of them)."""
    if len(results) == 1:
        return results[0]
    merged = EvaluationResult(values={}, thresholds={})
    for result in results:
        merged.values.update(result.values)
        merged.thresholds.update(result.thresholds)
        merged.coverage_thresholds.update(result.coverage_thresholds)
        merged.set_size_histograms.update(result.set_size_histograms)
        merged.per_class_accuracy.update(result.per_class_accuracy)
    return merged
