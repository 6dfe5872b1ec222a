"""TwoHeadModule: the LightningModule of average-K classification (network, loss, evaluation and λ_K)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from avgk_lightning import checkpoint as checkpoint_format
from avgk_lightning.batch import Batch
from avgk_lightning.checks import check_choice, check_module_arguments
from avgk_lightning.divergence import attached_trainer, check_finite_loss, check_finite_weights
from avgk_lightning.epoch_state import merge_across_processes
from avgk_lightning.errors import InvalidInputError
from avgk_lightning.evaluation import Calibration, Evaluation
from avgk_lightning.evaluation_steps import EvaluationSteps
from avgk_lightning.losses import build_loss
from avgk_lightning.metrics import EvaluationResult
from avgk_lightning.models import TwoHeadNetwork, create_backbone
from avgk_lightning.pseudo_labels import PseudoLabelRule
from avgk_lightning.recipes import reference_optimizer, reference_scheduler
from avgk_lightning.set_prediction import SetPrediction

__all__ = ["DEFAULT_EVAL_KS", "TwoHeadModule"]

DEFAULT_EVAL_KS = (1.0, 2.0, 3.0, 5.0, 10.0)


class TwoHeadModule(EvaluationSteps, SetPrediction, LightningModule):
    r"""A backbone with a softmax head and a multi-label head, trained for average-K classification.

    ``forward(x)`` returns ``(softmax_logits, multilabel_logits)`` of its
    :class:`~avgk_lightning.models.TwoHeadNetwork` (``self.network``). The `method` names the loss
    (:mod:`avgk_lightning.losses`): ``two_head`` trains cross-entropy on the softmax head plus ``mu`` times
    the BCE of the multi-label head on pseudo-labels (its ``pseudo_label_rule``, whose λ_pl
    :class:`~avgk_lightning.callbacks.PseudoLabelThreshold` sets every epoch), sets from the multi-label
    head; ``softmax`` trains the softmax head alone and makes its sets; the multi-label baselines (``an``,
    ``an_ls``, ``wan``, ``epr``, ``role``, ``em``) train the multi-label head alone. Heads a method does
    not train are frozen and not evaluated.

    Evaluation follows the Pl@ntNet-300K protocol (:class:`~avgk_lightning.evaluation_steps.EvaluationSteps`):
    every validation epoch calibrates λ_K on each head's scores for every K of ``eval_ks`` and logs the
    metrics named in :mod:`avgk_lightning.naming`; the λ_K of the checkpointed epoch are saved with it
    (``calibration``); ``test`` applies them unchanged, prints the report and keeps its results in
    ``test_results``. Sets are predicted by :class:`~avgk_lightning.set_prediction.SetPrediction`
    (:meth:`predict_sets`, ``predict``).

    New backbones: override :meth:`build_backbone`.

    Args:
        num_classes: number of classes L (linked from the data module by the CLI).
        backbone: a timm model name (:func:`~avgk_lightning.models.create_backbone`).
        pretrained: load the backbone's pretrained weights through timm (needs network or a local file).
        weights_path: a local timm or torchvision weights file for the backbone (implies pretrained).
        small_input_stem: for 32x32 inputs (CIFAR): a ResNet stem of one 3x3 stride-1 convolution.
        method: the training loss: a name of :data:`~avgk_lightning.losses.LOSSES` or the dotted path of an
            :class:`~avgk_lightning.losses.AverageKLoss` subclass.
        k: target average set size of the pseudo-labels (and the expected positives of EPR and ROLE), in [1, L);
            or a list of them (``two_head``): one multi-label head per K on the same backbone, each trained on
            the pseudo-labels of its K and evaluated at it. The first K is the model's K: it picks the best
            checkpoint (``monitor_name``) and is the default `predict_k`.
        mu: weight of the multi-label term of the two-head loss.
        loss_options: the loss's own keyword arguments, e.g. ``{bce_reduction: mean}`` (two_head).
        eval_ks: the K values evaluated; default 1, 2, 3, 5, 10 (those below L), plus `k`.
        optimizer: an optimizer factory; default SGD(lr=0.1, momentum=0.9, weight_decay=1e-4).
        lr_scheduler: a scheduler factory; default MultiStepLR dividing the rate by 10 at 50% and 75% of
            ``max_epochs``.
        class_names: one name per class (linked from the data module by the CLI; kept in checkpoints).
        class_counts: training samples per class (linked from the data module; for long-tail analyses).
        compile: compile the backbone with ``torch.compile`` (checkpoints keep their keys).
        coverages: target coverages 1 - alpha for split-conformal thresholds, calibrated beside λ_K.
        frequency_boundaries: (b1, b2): the test breakdown by training-class frequency groups classes
            into few (< b1), medium (b1..b2) and many (> b2) training images.
        predict_k: the K whose λ_K makes the sets of ``predict`` and :meth:`predict_sets`; default `k`.
        predict_head: the head whose sets ``predict``, :meth:`predict_sets` and the exports give:
            ``validation`` (default): at each K, the head with the higher validation average-K accuracy at the
            checkpoint's epoch (see :meth:`prediction_head`; a method that trains one head uses it); ``None``:
            the method's set head; or a head the method trains (``multilabel`` or ``softmax``). Training and
            the logged metrics are unchanged.
        backbone_options: the backbone's own keyword arguments, handed to ``timm.create_model`` (e.g.
            ``{drop_rate: 0.2}``, or ``{hidden: 32}`` for ``small_vgg``).

    Example:
        >>> import torch
        >>> model = TwoHeadModule(num_classes=10, backbone="resnet18", k=2)
        >>> softmax_logits, multilabel_logits = model(torch.randn(2, 3, 32, 32))
        >>> tuple(softmax_logits.shape), tuple(multilabel_logits.shape), model.eval_ks
        ((2, 10), (2, 10), [1.0, 2.0, 3.0, 5.0])
        >>> multi_k = TwoHeadModule(num_classes=10, backbone="resnet18", k=[1.5, 2, 3])  # a multi-label head per K
        >>> tuple(multi_k(torch.randn(2, 3, 32, 32))[1].shape), multi_k.ks
        ((2, 3, 10), (1.5, 2.0, 3.0))
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        small_input_stem: bool = False,
        method: str = "two_head",
        k: float | Sequence[float] = 3.0,
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
        predict_head: str | None = "validation",
        backbone_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_module_arguments(
            num_classes, k, class_names, class_counts, eval_ks, predict_k, coverages, frequency_boundaries
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        #: the K of the multi-label heads, one head each (a single K: one head, evaluated at every K)
        self.ks = tuple(float(value) for value in k) if isinstance(k, Sequence) else (float(k),)
        self.num_classes, self.k, self.method = num_classes, self.ks[0], method
        self.class_names = None if class_names is None else list(class_names)
        self.class_counts = None if class_counts is None else [int(count) for count in class_counts]
        self.loss = build_loss(method, num_classes=num_classes, k=self.k, mu=mu, options=loss_options)
        if len(self.ks) > 1 and not self.loss.uses_pseudo_labels:
            raise InvalidInputError(
                f"A list of K (argument `k` = {list(self.ks)}) trains one multi-label head per K on its own "
                f"pseudo-labels, which method={method!r} does not use: pass one K, or method two_head."
            )
        self.predict_k = self.k if predict_k is None else float(predict_k)
        default_ks = [value for value in DEFAULT_EVAL_KS if value < num_classes]
        self.eval_ks = sorted({*map(float, default_ks if eval_ks is None else eval_ks), *self.ks, self.predict_k})
        self.coverages = [float(coverage) for coverage in coverages]
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        rule_k = self.k if len(self.ks) == 1 else self.ks
        self.pseudo_label_rule = PseudoLabelRule(rule_k) if self.loss.uses_pseudo_labels else None
        self.calibration = Calibration()
        self.test_results: dict[str, EvaluationResult] = {}  # per head, from the last `test`

        if predict_head is not None:
            check_choice("predict_head", predict_head, ("validation", *self.loss.trained_heads))
        self.predict_head = predict_head
        if predict_head != "validation":
            self.prediction_head()  # a predict_k that no multi-label head was trained for: refused now
        self.network = TwoHeadNetwork(*self.build_backbone(), num_classes, multilabel_heads=len(self.ks))
        trained, set_head = self.loss.trained_heads, self.loss.set_head
        for head in {"softmax", "multilabel"} - set(trained):
            self.network.head(head).requires_grad_(False)
        heads = [set_head] + [head for head in trained if head != set_head]
        self.evaluation = Evaluation(
            num_classes,
            heads,
            self.eval_ks,
            self.coverages,
            self.class_counts,
            frequency_boundaries,
            multilabel_ks=self.ks if len(self.ks) > 1 else None,
        )

    @property
    def evaluation_heads(self) -> list[str]:
        """The heads the method trains, the set head first: those evaluated (besides the Bayes oracle)."""
        return self.evaluation.network_heads

    def build_backbone(self) -> tuple[nn.Module, int]:
        """The feature extractor and its output width; override to bring another network.

        The default is :func:`~avgk_lightning.models.create_backbone` with the module's `backbone`,
        `pretrained`, `weights_path`, `small_input_stem` and `backbone_options` arguments.
        """
        hparams = self.hparams
        return create_backbone(
            hparams.backbone,
            hparams.pretrained,
            hparams.weights_path,
            hparams.small_input_stem,
            hparams.get("backbone_options"),
        )

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.network.backbone.compile()
            self._compiled = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.network(x)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.loss.uses_sample_indices:
            dataset = getattr(self.trainer.datamodule, "train_dataset", None)
            if dataset is None:
                raise InvalidInputError(
                    f"method={self.method!r} needs the dataset index of every training sample: train with an "
                    "avgk_lightning AverageKDataModule (its training batches carry `index`), or give your data "
                    "module a `train_dataset` and yield avgk_lightning.batch.Batch(..., index=...) batches."
                )
            self.loss.setup_samples(len(dataset))

    def on_fit_start(self) -> None:
        from avgk_lightning.callbacks import PseudoLabelThreshold

        callbacks = self.trainer.callbacks
        if self.pseudo_label_rule is not None and not any(isinstance(c, PseudoLabelThreshold) for c in callbacks):
            warnings.warn(
                "No PseudoLabelThreshold callback: the pseudo-labels use the batch rule throughout. Add "
                "`PseudoLabelThreshold()` to the Trainer's callbacks for the epoch-level threshold.",
                stacklevel=2,
            )

    def on_train_epoch_start(self) -> None:
        self.loss.on_train_epoch_start(self.current_epoch)

    def _merge_epoch_states(self) -> None:
        if attached_trainer(self) is not None and self.trainer.state.fn == "fit":
            for state in self.loss.epoch_states().values():
                merge_across_processes(state, lambda tensor: self.trainer.strategy.reduce(tensor, reduce_op="sum"))

    def on_train_epoch_end(self) -> None:
        self._merge_epoch_states()

    def on_validation_epoch_start(self) -> None:
        # Validation inside fit (and the checkpoint saved after it) comes before on_train_epoch_end.
        self._merge_epoch_states()
        if self.trainer.state.fn == "fit":
            self.calibration.weights_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.calibration.weights_step = self.trainer.global_step  # the λ_K held were calibrated on older weights

    def training_step(self, batch: Batch | Sequence[Tensor], batch_idx: int) -> dict[str, Any]:
        batch = Batch.of(batch)
        if self.loss.uses_sample_indices and batch.index is None:
            raise InvalidInputError(f"method={self.method!r} needs training batches with `index` (see `setup`)")
        softmax_logits, multilabel_logits = self(batch.images)
        step = None if self.pseudo_label_rule is None else self.pseudo_label_rule(softmax_logits, batch.target)
        labels = None if step is None else step.labels
        terms = self.loss(softmax_logits, multilabel_logits, batch.target, labels, batch.index)
        check_finite_loss(terms["loss"], self, batch_idx)
        size = batch.target.shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        # Top-1 accuracy on the training labels as given (noisy where the data add noise): how far the
        # network fits them. One all-reduce at the epoch end.
        fitted = softmax_logits if "softmax" in self.loss.trained_heads else multilabel_logits
        accuracy = (fitted.detach().argmax(dim=1) == batch.target).float().mean()
        self.log("train/top1_acc", accuracy, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return {"loss": terms["loss"], "pseudo_labels": step}

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = (self.optimizer_factory or reference_optimizer)(parameters)
        if self.lr_scheduler_factory is None:
            trainer = attached_trainer(self)
            scheduler = reference_scheduler(optimizer, None if trainer is None else trainer.max_epochs)
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_weights(checkpoint.get("state_dict", {}), self)
        checkpoint_format.save(checkpoint, self.num_classes, self.method, self.calibration, self.loss, self.ks)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint_format.load(
            checkpoint, self.num_classes, self.class_names, self.method, self.calibration, self.loss, self.ks
        )
        trainer = attached_trainer(self)
        if trainer is not None and trainer.state.fn == "fit":  # resuming: the loss must be the one it began with
            warning = checkpoint_format.check_resumed_loss(checkpoint, self.loss.options())
            if warning is not None:
                rank_zero_warn(warning)
