"""TwoHeadModule: the two-headed network, its training step and the average-K evaluation protocol."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from avgk_lightning.diagnostics import check_coverage, check_frequency_boundaries
from avgk_lightning.errors import InvalidInputError, MissingFileError, NonFiniteLossError
from avgk_lightning.functional import _batch_pseudo_label_threshold, _pseudo_labels, average_k_sets
from avgk_lightning.losses import build_loss
from avgk_lightning.metrics import AverageKEvaluation, format_k
from avgk_lightning.report import diagnostics_table, results_table, set_size_table
from avgk_lightning.resume import collect_rng_states, restore_rng_states

__all__ = ["DEFAULT_EVAL_KS", "TwoHeadModule"]

DEFAULT_EVAL_KS = (1.0, 2.0, 3.0, 5.0, 10.0)
_CHECKPOINT_KEY = "average_k"


def _load_backbone_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load a timm or torchvision weights file into a classifier-less timm model, refusing any mismatch.

    timm's own pretrained loading is lenient (keys it cannot place are only logged); here every weight
    of the backbone must come from the file, with its shape. The file's classifier is dropped.
    """
    import sys

    import timm

    try:
        state_dict = timm.models.load_state_dict(str(path))
    except Exception as error:
        raise InvalidInputError(
            f"Cannot read backbone weights file {path} (argument `weights_path`): {error}"
        ) from error
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    classifier = model.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{head}." for head in ([classifier] if isinstance(classifier, str) else classifier))
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(prefixes)}
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        key for key in expected if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label}: {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise InvalidInputError(
            f"Backbone weights file {path} does not match backbone {name!r} ({details}): pass the weights of "
            f"{name!r} (argument `weights_path`) or the backbone they belong to (argument `backbone`)."
        )
    model.load_state_dict(state_dict)


class TwoHeadModule(LightningModule):
    r"""A backbone with a softmax head and a multi-label head, trained for average-K classification.

    ``forward(x)`` returns ``(softmax_logits, multilabel_logits)``. With ``method="two_head"`` the loss is
    cross-entropy on the softmax head plus ``mu`` times the binary cross-entropy of the multi-label head
    on pseudo-labels (the true label, plus the non-true classes whose softmax score reaches λ_pl, set by
    :class:`~avgk_lightning.callbacks.PseudoLabelThreshold`), and the sets come from the multi-label
    head. With ``method="softmax"`` only cross-entropy is trained (the multi-label head is frozen) and the
    sets come from the softmax head. The multi-label baselines (``an``, ``an_ls``, ``wan``, ``epr``,
    ``role``, ``em``; see :mod:`avgk_lightning.losses`) train the multi-label head alone (the softmax
    head is frozen) and make their sets from it. Heads a method does not train are not evaluated.

    Evaluation follows the Pl@ntNet-300K protocol: at every validation epoch and for every K of
    ``eval_ks``, λ_K is calibrated on the validation scores of each head and ``val/avgk_acc@K``,
    ``val/avgk_acc_macro@K``, ``val/topk_acc@K`` (integer K), ``val/set_size@K`` and
    ``val/threshold@K`` are logged for the head that makes the sets, under ``val/softmax/`` for the
    softmax head of a two-head model, and under ``val/oracle/`` for the Bayes posteriors when the data
    provide them. The λ_K of the checkpointed epoch are saved in the checkpoint; ``test`` applies them
    unchanged and logs the same names under ``test/``.

    New backbones: override :meth:`build_backbone`.

    Args:
        num_classes: number of classes L (linked from the data module by the CLI).
        backbone: a timm model name.
        pretrained: load the backbone's pretrained weights through timm (needs network or a local file).
        weights_path: a local weights file for the backbone (implies pretrained), e.g. a timm or
            torchvision ``.pth``/``.safetensors`` file.
        small_input_stem: for 32x32 inputs (CIFAR): replace a timm ResNet's 7x7 stride-2 stem convolution
            and its max-pool by one 3x3 stride-1 convolution, the usual CIFAR ResNet.
        method: the training loss: a name of :data:`~avgk_lightning.losses.LOSSES` (``two_head``,
            ``softmax``, ``an``, ``an_ls``, ``wan``, ``epr``, ``role``, ``em``) or the dotted path of an
            :class:`~avgk_lightning.losses.AverageKLoss` subclass.
        k: target average set size of the pseudo-labels (and the expected positives of EPR and ROLE),
            in [1, L).
        mu: weight of the multi-label term of the two-head loss.
        loss_options: the loss's own keyword arguments, e.g. ``{label_smoothing: 0.1}`` (an_ls),
            ``{alpha: 0.1}`` (em), ``{estimator_lr: 1.0}`` (role); each loss documents its defaults.
        eval_ks: the K values evaluated; default 1, 2, 3, 5, 10 (those below L), plus `k`.
        optimizer: an optimizer factory; default the reference recipe, SGD(lr=0.1, momentum=0.9,
            weight_decay=1e-4).
        lr_scheduler: a scheduler factory; default the reference recipe, MultiStepLR with the rate
            divided by 10 at 50% and 75% of ``max_epochs``.
        class_names: one name per class (linked from the data module by the CLI; kept in checkpoints).
        class_counts: training samples per class (linked from the data module; for long-tail analyses).
        compile: compile the backbone with ``torch.compile`` (in place: checkpoints keep their keys and
            load into an uncompiled model).
        coverages: target coverages 1 - alpha for split-conformal thresholds, calibrated on validation
            beside λ_K (``coverage@c``, ``coverage_set_size@c``); default 0.9.
        frequency_boundaries: (b1, b2): the test breakdown by training-class frequency groups classes
            into few (< b1), medium (b1..b2) and many (> b2) training images; default (20, 100).
        predict_k: the K whose calibrated λ_K makes the sets of ``predict`` and :meth:`predict_sets`;
            default `k`.

    Example:
        >>> model = TwoHeadModule(num_classes=10, backbone="resnet18", k=2)
        >>> softmax_logits, multilabel_logits = model(torch.randn(2, 3, 32, 32))
        >>> tuple(softmax_logits.shape), tuple(multilabel_logits.shape), model.eval_ks
        ((2, 10), (2, 10), [1.0, 2.0, 3.0, 5.0])
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        small_input_stem: bool = False,
        method: str = "two_head",
        k: float = 3.0,
        mu: float = 1.0,
        loss_options: dict[str, Any] | None = None,
        eval_ks: Sequence[float] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_names: Sequence[str] | None = None,
        class_counts: Sequence[int] | None = None,
        compile: bool = False,
        coverages: Sequence[float] = (0.9,),
        frequency_boundaries: tuple[int, int] = (20, 100),
        predict_k: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InvalidInputError(f"Expected argument `num_classes` to be an integer >= 2, but got {num_classes!r}")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k < num_classes:
            raise InvalidInputError(
                f"Expected argument `k` to be a number in [1, num_classes={num_classes}), but got {k!r}: "
                "it is the average number of positive pseudo-labels, the true label included"
            )
        for name, values in (("class_names", class_names), ("class_counts", class_counts)):
            if values is not None and len(values) != num_classes:
                raise InvalidInputError(
                    f"Expected argument `{name}` to have num_classes={num_classes} entries, but got {len(values)}"
                )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.class_names = None if class_names is None else list(class_names)
        self.class_counts = None if class_counts is None else [int(count) for count in class_counts]
        self.num_classes = num_classes
        self.k = float(k)
        self.method = method
        self.loss = build_loss(method, num_classes=num_classes, k=self.k, mu=mu, options=loss_options)
        if predict_k is not None:
            self._check_evaluated_k(predict_k, num_classes, "argument `predict_k`")
        self.predict_k = self.k if predict_k is None else float(predict_k)
        self.eval_ks = sorted({*self._resolve_eval_ks(eval_ks, num_classes, self.k), self.predict_k})
        for coverage in coverages:
            check_coverage(coverage, "every entry of argument `coverages`")
        self.coverages = [float(coverage) for coverage in coverages]
        check_frequency_boundaries(frequency_boundaries)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        # λ_pl for the current epoch, set by PseudoLabelThreshold; None means the batch rule.
        self.pseudo_label_threshold: float | None = None
        # λ_K per evaluated head, from the last validation (or the loaded checkpoint); λ_c per coverage.
        self.average_k_thresholds: dict[str, dict[float, float]] = {}
        self.coverage_thresholds: dict[str, dict[float, float]] = {}
        # Set-size histograms and per-class accuracies of the last test, per head and K (for plots).
        self.test_details: dict[str, dict[float, dict[str, Tensor]]] = {}
        self.test_results: dict[str, float] = {}

        self.backbone, feature_width = self.build_backbone()
        self.softmax_head = nn.Linear(feature_width, num_classes)
        self.multilabel_head = nn.Linear(feature_width, num_classes)
        trained = self.loss.trained_heads
        if self.loss.set_head not in trained or not set(trained) <= {"softmax", "multilabel"}:
            raise InvalidInputError(
                f"Loss {type(self.loss).__name__}: `trained_heads` {trained!r} must be among ('softmax', "
                f"'multilabel') and include `set_head` {self.loss.set_head!r}"
            )
        for head in ("softmax", "multilabel"):
            if head not in trained:
                getattr(self, f"{head}_head").requires_grad_(False)
        self.evaluation_heads = [self.loss.set_head] + [head for head in trained if head != self.loss.set_head]
        test_options = {"class_counts": self.class_counts, "diagnostics": True}
        test_options["frequency_boundaries"] = tuple(frequency_boundaries)
        self.evaluations = nn.ModuleDict(
            {
                f"{stage}_{head}": AverageKEvaluation(
                    num_classes, self.eval_ks, coverages=self.coverages, **(test_options if stage == "test" else {})
                )
                for stage in ("val", "test")
                for head in (*self.evaluation_heads, "oracle")
            }
        )

    @staticmethod
    def _check_evaluated_k(value: object, num_classes: int, argument: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < num_classes:
            raise InvalidInputError(
                f"Expected {argument} to be a number in (0, num_classes={num_classes}), but got {value!r}"
            )

    @staticmethod
    def _resolve_eval_ks(eval_ks: Sequence[float] | None, num_classes: int, k: float) -> list[float]:
        if eval_ks is None:
            ks = {value for value in DEFAULT_EVAL_KS if value < num_classes}
        else:
            ks = set()
            for value in eval_ks:
                TwoHeadModule._check_evaluated_k(value, num_classes, "every entry of argument `eval_ks`")
                ks.add(float(value))
        ks.add(k)
        return sorted(ks)

    def build_backbone(self) -> tuple[nn.Module, int]:
        """The feature extractor and its output width; override to bring another network.

        The default builds ``self.hparams.backbone`` with timm, without its classifier
        (``num_classes=0``: pooled features), and reads the width from ``head_hidden_size`` where the
        model has one (it differs from ``num_features`` for e.g. MobileNetV3), else ``num_features``.
        """
        import timm

        name = self.hparams.backbone
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
            hint = f" Close timm names: {', '.join(close)}." if close else ""
            raise InvalidInputError(f"Unknown backbone {name!r} (argument `backbone`).{hint} See timm.list_models().")
        weights_path = self.hparams.weights_path
        if weights_path is not None and not Path(weights_path).expanduser().is_file():
            raise MissingFileError(
                f"Backbone weights file not found: {weights_path} (argument `weights_path`). Save the weights "
                f"of {name!r} there (e.g. on a machine with internet: torch.save(timm.create_model({name!r}, "
                "pretrained=True).state_dict(), PATH)), or pass `weights_path: null` to train from scratch."
            )
        download = self.hparams.pretrained and weights_path is None
        try:
            model = timm.create_model(name, pretrained=download, num_classes=0)
        except OSError as error:  # the hub is unreachable (no network) or the weights are not cached
            if not download:
                raise
            raise InvalidInputError(
                f"Cannot download the pretrained weights of {name!r} (argument `pretrained: true`): {error}. "
                f"Without network, save them on a machine with internet (torch.save(timm.create_model({name!r}, "
                "pretrained=True).state_dict(), PATH)) and pass --model.init_args.weights_path PATH."
            ) from error
        if weights_path is not None:
            _load_backbone_weights(model, Path(weights_path).expanduser(), name)
        if self.hparams.small_input_stem:
            stem = getattr(model, "conv1", None)
            if not isinstance(stem, nn.Conv2d) or not hasattr(model, "maxpool"):
                raise InvalidInputError(
                    f"`small_input_stem` applies to timm ResNets (a `conv1` convolution and a `maxpool`); "
                    f"{name!r} has none: override `build_backbone` instead"
                )
            model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        width = getattr(model, "head_hidden_size", None) or model.num_features
        return model, int(width)

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.backbone.compile()
            self._compiled = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return self.softmax_head(features), self.multilabel_head(features)

    @staticmethod
    def _unpack(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise InvalidInputError(
                "Expected a batch (images, targets) or (images, targets, label_distributions), "
                f"but got {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
            )
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None

    def setup(self, stage: str) -> None:
        if stage != "fit" or not self.loss.uses_sample_indices:
            return
        datamodule = self.trainer.datamodule
        if getattr(datamodule, "sample_indices", None) is None or getattr(datamodule, "train_dataset", None) is None:
            raise InvalidInputError(
                f"method={self.method!r} needs the dataset index of every training sample: train with an "
                "avgk_lightning AverageKDataModule (it appends the indices to the training batches when asked), "
                "or give your data module a `sample_indices` attribute and a `train_dataset`, and end its "
                "training batches with the indices when `sample_indices` is True."
            )
        datamodule.sample_indices = True
        self.loss.setup_samples(len(datamodule.train_dataset))

    def _synchronize_loss(self) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self.loss.synchronize(lambda tensor: self.trainer.strategy.reduce(tensor, reduce_op="sum"))

    def on_train_epoch_end(self) -> None:
        self._synchronize_loss()

    def on_validation_epoch_start(self) -> None:
        # Validation inside fit (and the checkpoint saved after it) comes before on_train_epoch_end.
        self._synchronize_loss()

    def on_train_epoch_start(self) -> None:
        self.loss.on_train_epoch_start(self.current_epoch)

    def on_fit_start(self) -> None:
        from avgk_lightning.callbacks import PseudoLabelThreshold

        if self.loss.uses_pseudo_labels and not any(
            isinstance(callback, PseudoLabelThreshold) for callback in self.trainer.callbacks
        ):
            warnings.warn(
                "No PseudoLabelThreshold callback: the pseudo-labels use the batch rule throughout. Add "
                "`PseudoLabelThreshold()` to the Trainer's callbacks for the epoch-level threshold.",
                stacklevel=2,
            )

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor]:
        sample_indices = None
        if self.loss.uses_sample_indices:
            batch, sample_indices = batch[:-1], batch[-1]
        images, target, _ = self._unpack(batch)
        softmax_logits, multilabel_logits = self(images)
        outputs: dict[str, Tensor] = {}
        labels = None
        if self.loss.uses_pseudo_labels:
            probs = softmax_logits.detach().float().softmax(dim=1)
            if self.pseudo_label_threshold is None:
                threshold = _batch_pseudo_label_threshold(probs, target, self.k)
            else:
                threshold = torch.tensor(self.pseudo_label_threshold, device=probs.device)
            labels = _pseudo_labels(probs, target, threshold)
            outputs.update(
                softmax_probs=probs,
                target=target,
                pseudo_label_positives=labels.sum(),
                pseudo_label_threshold=threshold,
            )
        terms = self.loss(softmax_logits, multilabel_logits, target, labels, sample_indices)
        if not torch.isfinite(terms["loss"]):
            self._stop_on_non_finite_loss(terms["loss"], batch_idx)
        batch_size = target.shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        # Top-1 accuracy on the training labels as given (noisy where the data add noise): how far the
        # network fits them. One all-reduce at the epoch end.
        fitted_logits = softmax_logits if "softmax" in self.loss.trained_heads else multilabel_logits
        accuracy = (fitted_logits.detach().argmax(dim=1) == target).float().mean()
        self.log("train/top1_acc", accuracy, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        outputs["loss"] = terms["loss"]
        return outputs

    def _stop_on_non_finite_loss(self, loss: Tensor, batch_idx: int) -> None:
        checkpoint = self.trainer.checkpoint_callback if self._trainer is not None else None
        saved = (checkpoint.last_model_path or checkpoint.best_model_path) if checkpoint is not None else ""
        raise NonFiniteLossError(
            f"The training loss is {float(loss)} at global step {self.global_step} (epoch {self.current_epoch}, "
            f"batch index {batch_idx}): training stopped before this update. The last good weights are in "
            f"{saved or 'no checkpoint yet'}. Lower the learning rate, or check this batch's data."
        )

    def _head_scores(self, images: Tensor) -> dict[str, Tensor]:
        softmax_logits, multilabel_logits = self(images)
        scores = {}
        if "softmax" in self.evaluation_heads:
            scores["softmax"] = softmax_logits.float().softmax(dim=1)
        if "multilabel" in self.evaluation_heads:
            scores["multilabel"] = multilabel_logits.float().sigmoid()
        return scores

    def _evaluation_step(self, stage: str, batch: Sequence[Tensor]) -> None:
        images, target, posteriors = self._unpack(batch)
        scores = self._head_scores(images)
        if posteriors is not None and (stage == "val" or "oracle" in self.average_k_thresholds):
            scores["oracle"] = posteriors.float()
        for head, head_scores in scores.items():
            self.evaluations[f"{stage}_{head}"].update(head_scores, target)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluation_step("test", batch)

    def _prefix(self, stage: str, head: str) -> str:
        return f"{stage}/" if head == self.loss.set_head else f"{stage}/{head}/"

    def _evaluation_epoch_end(self, stage: str) -> dict[str, float]:
        logged: dict[str, float] = {}
        for head in (*self.evaluation_heads, "oracle"):
            evaluation = self.evaluations[f"{stage}_{head}"]
            if not evaluation.update_called:
                continue
            results = evaluation.compute()
            prefix = self._prefix(stage, head)
            for k, threshold in evaluation.thresholds.items():
                results[f"threshold@{format_k(k)}"] = threshold
            for coverage, threshold in evaluation.coverage_thresholds.items():
                results[f"coverage_threshold@{format_k(coverage)}"] = threshold
            logged.update({prefix + name: float(value) for name, value in results.items()})
            if stage == "val" and not self.trainer.sanity_checking:
                self.average_k_thresholds[head] = {k: float(t) for k, t in evaluation.thresholds.items()}
                self.coverage_thresholds[head] = {c: float(t) for c, t in evaluation.coverage_thresholds.items()}
            if stage == "test":
                self.test_details[head] = dict(evaluation.details)
            evaluation.reset()
        # Values are identical on every process (the metric states were gathered before compute).
        self.log_dict(logged, sync_dist=False)
        return logged

    def on_validation_epoch_end(self) -> None:
        logged = self._evaluation_epoch_end("val")
        if not self.trainer.sanity_checking:
            name = f"avgk_acc@{format_k(self.k)}"
            summary = ", ".join(
                f"{key} {logged[key]:.4f}"
                for key in (f"val/{name}", f"val/softmax/{name}", f"val/oracle/{name}")
                if key in logged
            )
            rank_zero_info(f"Epoch {self.current_epoch}: {summary}")

    def on_test_epoch_start(self) -> None:
        missing = [head for head in self.evaluation_heads if head not in self.average_k_thresholds]
        if missing:
            raise InvalidInputError(
                f"No calibrated average-K thresholds for the {', '.join(missing)} head: `test` applies the λ_K "
                "calibrated on validation data. Pass the checkpoint of a `fit` run (--ckpt_path PATH) or run "
                "`validate` first in the same session."
            )
        for head, thresholds in self.average_k_thresholds.items():
            self.evaluations[f"test_{head}"].set_thresholds(thresholds, self.coverage_thresholds.get(head, {}))
        self.test_details = {}

    def on_test_epoch_end(self) -> None:
        logged = self._evaluation_epoch_end("test")
        self.test_results = logged
        if self.trainer.is_global_zero:
            rank_zero_info(results_table(logged, "test", self.eval_ks, self.loss.set_head))
            rank_zero_info(diagnostics_table(logged, "test", self.eval_ks, self.loss.set_head, self.coverages))
            histograms = {head: by_k[self.k]["set_size_histogram"] for head, by_k in self.test_details.items()}
            rank_zero_info(set_size_table(histograms, self.k))

    def calibrated_threshold(self, k: float | None = None, argument: str = "predict_k") -> float:
        """The λ_K of the set head calibrated on validation for `k` (default `predict_k`).

        Raises a ValueError naming `argument` and listing the calibrated K when `k` was not calibrated.
        """
        k = self.predict_k if k is None else float(k)
        thresholds = self.average_k_thresholds.get(self.loss.set_head)
        if not thresholds:
            raise InvalidInputError(
                "No calibrated average-K thresholds: pass the checkpoint of a `fit` run (--ckpt_path PATH)."
            )
        if k not in thresholds:
            calibrated = ", ".join(format_k(value) for value in sorted(thresholds))
            raise InvalidInputError(
                f"K={format_k(k)} (argument `{argument}`) was not calibrated: the checkpoint has λ_K for K = "
                f"{calibrated}. Pick one of them, or add it to `eval_ks` and train again."
            )
        return thresholds[k]

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Scores of the set head, the boolean set mask at K = `predict_k`, that K and its λ_K."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        threshold = self.calibrated_threshold()
        scores = self._head_scores(images)[self.loss.set_head]
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
        threshold = self.calibrated_threshold(k)
        was_training = self.training
        self.eval()
        try:
            scores = self._head_scores(images.to(self.device))[self.loss.set_head]
        finally:
            self.train(was_training)
        order = scores.argsort(dim=1, descending=True)
        ordered = scores.gather(1, order) >= threshold
        return [row[keep].tolist() for row, keep in zip(order, ordered)]

    def predict_set_names(self, images: Tensor, k: float | None = None) -> list[list[str]]:
        """:meth:`predict_sets` with class names (the data module's, or the class indices as text)."""
        names = self.class_names or [str(index) for index in range(self.num_classes)]
        return [[names[index] for index in indices] for indices in self.predict_sets(images, k)]

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4)
        else:
            optimizer = self.optimizer_factory(parameters)
        if self.lr_scheduler_factory is None:
            max_epochs = self.trainer.max_epochs if self.trainer is not None else None
            milestones = [] if not max_epochs or max_epochs < 0 else [max_epochs // 2, (3 * max_epochs) // 4]
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_CHECKPOINT_KEY] = {
            "num_classes": self.num_classes,
            "method": self.method,
            "thresholds": {head: dict(values) for head, values in self.average_k_thresholds.items()},
            "coverage_thresholds": {head: dict(values) for head, values in self.coverage_thresholds.items()},
            "rng_states": collect_rng_states(),
            "loss_state": self.loss.extra_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(_CHECKPOINT_KEY)
        if saved is None:
            return
        if saved["num_classes"] != self.num_classes:
            raise InvalidInputError(
                f"The checkpoint was trained with num_classes={saved['num_classes']}, but the model has "
                f"num_classes={self.num_classes}: use the data set the checkpoint was trained on."
            )
        saved_names = checkpoint.get("hyper_parameters", {}).get("class_names")
        if saved_names is not None and self.class_names is not None and list(saved_names) != self.class_names:
            differing = next(i for i, (a, b) in enumerate(zip(saved_names, self.class_names)) if a != b)
            raise InvalidInputError(
                f"The checkpoint was trained on other classes: class {differing} is {saved_names[differing]!r} "
                f"there and {self.class_names[differing]!r} in this data set. Use the data set it was trained on."
            )
        if saved["method"] != self.method:
            raise InvalidInputError(
                f"The checkpoint was trained with method={saved['method']!r}, but the model has "
                f"method={self.method!r}: pass --model.method {saved['method']}."
            )
        self.average_k_thresholds = {head: dict(values) for head, values in saved["thresholds"].items()}
        self.coverage_thresholds = {head: dict(values) for head, values in saved.get("coverage_thresholds", {}).items()}
        self.loss.load_extra_state(saved.get("loss_state", {}))
        if "rng_states" in saved:
            # Continue the random streams of the interrupted run (see avgk_lightning.resume); the first
            # training batches are drawn before any later hook, and evaluation draws nothing from them.
            restore_rng_states(saved["rng_states"])
