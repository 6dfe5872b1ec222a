r"""Training objectives of average-K classification, one registry keyed by the `method` name.

Every loss is an :class:`AverageKLoss`: one :meth:`~AverageKLoss.forward` returning the total and its
named terms, plus class attributes saying which heads it trains and which head makes the sets. The
multi-label baselines (``an``, ``an_ls``, ``wan``, ``epr``, ``role``, ``em``) are the weakly supervised
single-positive losses of ``../shared/design/paper.md``: one sigmoid head, the observed label as the
only positive. Every per-class term of theirs is averaged over classes and samples (the two-head
loss's BCE is summed over classes by default: see :class:`TwoHeadLoss`); the expected-positive regulariser is :math:`(\frac1B\sum_b\sum_j g_{bj} - K)^2 / C^2`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgk_lightning.errors import InvalidInputError

__all__ = [
    "LOSSES",
    "AssumeNegativeLoss",
    "AverageKLoss",
    "EntropyMaximisationLoss",
    "ExpectedPositiveLoss",
    "LabelSmoothingAssumeNegativeLoss",
    "RegularisedOnlineLabelEstimationLoss",
    "SoftmaxLoss",
    "TwoHeadLoss",
    "WeakAssumeNegativeLoss",
    "build_loss",
    "expected_positive_regulariser",
]

LOSSES: dict[str, type[AverageKLoss]] = {}


class AverageKLoss(nn.Module):
    """One training method: its loss, the heads it trains and the head whose scores make the sets.

    Subclass it, set the class attributes and write :meth:`forward`; a subclass with a ``name`` is
    registered in :data:`LOSSES` and selected with ``--model.method NAME`` (or ``--model.method
    package.module.ClassName`` without registering). The constructor may take any of ``num_classes``,
    ``k`` and ``mu`` (filled in by the module) plus its own options (``--model.loss_options``).
    A loss with parameters of its own (a learnable temperature, say) is trained with the network.

    Example:
        >>> class SquaredError(AverageKLoss):  # a made-up multi-label loss
        ...     name = "squared_error"
        ...     def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        ...         observed = F.one_hot(target, multilabel_logits.shape[1]).float()
        ...         loss = (multilabel_logits.sigmoid() - observed).pow(2).mean()
        ...         return {"loss": loss}
        >>> build_loss("squared_error")(None, torch.zeros(1, 4), torch.tensor([2]))["loss"]
        tensor(0.2500)
        >>> del LOSSES["squared_error"]
    """

    name: ClassVar[str]
    #: the head whose scores, thresholded at the calibrated λ_K, make the predicted sets
    set_head: ClassVar[Literal["softmax", "multilabel"]] = "multilabel"
    #: the heads the loss trains (the others are frozen and not evaluated)
    trained_heads: ClassVar[tuple[str, ...]] = ("multilabel",)
    #: forward needs the pseudo-labels of the two-head loss (set by PseudoLabelThreshold)
    uses_pseudo_labels: ClassVar[bool] = False
    #: forward needs the dataset index of each training sample (the data module appends them)
    uses_sample_indices: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        registered = LOSSES.get(name)
        if registered is not None and registered.__qualname__ != cls.__qualname__:
            raise InvalidInputError(
                f"A loss named {name!r} is already registered ({registered.__module__}.{registered.__qualname__}):"
                f" choose another `name` for {cls.__module__}.{cls.__qualname__}"
            )
        LOSSES[name] = cls

    @abstractmethod
    def forward(
        self,
        softmax_logits: Tensor,
        multilabel_logits: Tensor,
        target: Tensor,
        pseudo_labels: Tensor | None = None,
        sample_indices: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"loss": total, ...named terms}`` for a batch (every term is logged as ``train/<name>``)."""

    # Optional hooks, used by losses with per-sample state (ROLE) or a schedule (two_head); no-ops by default.
    def setup_samples(self, num_samples: int) -> None:
        """Called before training with the number of training samples."""

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called at the start of every training epoch with its 0-based index (for schedules such as a warm-up)."""

    def synchronize(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        """Merge per-process state (called on every process at the end of each training epoch)."""

    def extra_state(self) -> dict[str, Any]:
        """State saved in checkpoints besides parameters."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""


def _observed(target: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(target.long(), num_classes).bool()


def expected_positive_regulariser(scores: Tensor, k: float) -> Tensor:
    r"""EPR of Cole et al.: :math:`(\frac1B\sum_b\sum_j g_{bj} - K)^2 / C^2` for (B, C) sigmoid scores `g`.

    Example:
        >>> float(expected_positive_regulariser(torch.full((2, 4), 0.5), k=1.0))  # (2 - 1)^2 / 16
        0.0625
    """
    return (scores.sum(dim=1).mean() - k).pow(2) / scores.shape[1] ** 2


class SoftmaxLoss(AverageKLoss):
    """Cross-entropy on the softmax head; sets by thresholding the softmax probabilities (the plug-in baseline).

    Example:
        >>> terms = SoftmaxLoss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(4)
        1.3863
    """

    name = "softmax"
    set_head = "softmax"
    trained_heads = ("softmax",)

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        cross_entropy = F.cross_entropy(softmax_logits, target)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy}


class TwoHeadLoss(AverageKLoss):
    r"""Two-head loss :math:`\mathrm{CE}(a, y) + \mu \cdot \mathrm{BCE}(m, \tilde y)`, sets from the multi-label head.

    :math:`\tilde y` are the (gradient-free) pseudo-labels. The paper's abstract leaves open how the
    BCE over the C classes is reduced and whether training starts with cross-entropy alone; both are
    options, with the defaults chosen by the ablations in ``benchmarks/results/`` (``docs/reproduce.md``).
    The BCE is summed over classes by default: averaged, each multi-label logit gets 1/C of the gradient
    that cross-entropy gives a softmax logit (1/1,081 on Pl@ntNet-300K), and on Fashion-MNIST the sum
    beat the average on 23 of 24 paired seeds over four noise levels and two checkpoints.

    Args:
        mu: weight of the multi-label term (``--model.mu``).
        bce_reduction: ``"sum"`` (default): BCE summed over classes, averaged over samples; ``"mean"``:
            averaged over classes too (C times smaller multi-label gradients: the reading measured first).
        warmup_epochs: epochs of cross-entropy alone before the multi-label term starts (it is still
            computed and logged, with weight 0; the pseudo-label statistics are gathered meanwhile).

    Example:
        >>> labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
        >>> terms = TwoHeadLoss(mu=1.0)(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]), labels)
        >>> round(float(terms["loss"]), 4)  # log(4) + 4 log(2): four classes of log(2) each
        4.1589
        >>> terms = TwoHeadLoss(bce_reduction="mean")(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 3]), labels)
        >>> round(float(terms["loss"]), 4)  # log(4) + log(2)
        2.0794
    """

    name = "two_head"
    trained_heads = ("multilabel", "softmax")
    uses_pseudo_labels = True

    def __init__(self, mu: float = 1.0, bce_reduction: Literal["mean", "sum"] = "sum", warmup_epochs: int = 0) -> None:
        super().__init__()
        if mu < 0:
            raise InvalidInputError(f"Expected argument `mu` to be >= 0, but got {mu!r}")
        if bce_reduction not in ("mean", "sum"):
            raise InvalidInputError(
                f"Expected argument `bce_reduction` to be 'mean' or 'sum', but got {bce_reduction!r}"
            )
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise InvalidInputError(
                f"Expected argument `warmup_epochs` to be an integer >= 0, but got {warmup_epochs!r}"
            )
        self.mu = mu
        self.bce_reduction = bce_reduction
        self.warmup_epochs = warmup_epochs
        self._epoch = 0

    def on_train_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        if pseudo_labels is None:
            raise InvalidInputError("TwoHeadLoss needs `pseudo_labels` (see avgk_lightning.functional.pseudo_labels)")
        cross_entropy = F.cross_entropy(softmax_logits, target)
        binary_cross_entropy = F.binary_cross_entropy_with_logits(
            multilabel_logits, pseudo_labels.to(multilabel_logits.dtype)
        )
        if self.bce_reduction == "sum":
            binary_cross_entropy = binary_cross_entropy * multilabel_logits.shape[1]
        weight = 0.0 if self._epoch < self.warmup_epochs else self.mu
        return {
            "loss": cross_entropy + weight * binary_cross_entropy,
            "cross_entropy": cross_entropy,
            "binary_cross_entropy": binary_cross_entropy,
        }


class AssumeNegativeLoss(AverageKLoss):
    """AN: binary cross-entropy with the observed label positive and every other class negative.

    Example:
        >>> terms = AssumeNegativeLoss()(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2)
        0.6931
    """

    name = "an"

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1]).to(multilabel_logits.dtype)
        loss = F.binary_cross_entropy_with_logits(multilabel_logits, observed)
        return {"loss": loss}


class LabelSmoothingAssumeNegativeLoss(AverageKLoss):
    """AN-LS: AN with label smoothing: targets 1 - `label_smoothing` for the observed label, `label_smoothing` else.

    Args:
        label_smoothing: the smoothing, in [0, 0.5); default 0.1.

    Example:
        >>> terms = LabelSmoothingAssumeNegativeLoss(0.1)(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2), whatever the targets, at logit 0
        0.6931
    """

    name = "an_ls"

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 0.5:
            raise InvalidInputError(
                f"Expected argument `label_smoothing` to be a number in [0, 0.5), but got {label_smoothing!r}"
            )
        self.label_smoothing = label_smoothing

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1]).to(multilabel_logits.dtype)
        smoothed = observed * (1 - self.label_smoothing) + (1 - observed) * self.label_smoothing
        return {"loss": F.binary_cross_entropy_with_logits(multilabel_logits, smoothed)}


class WeakAssumeNegativeLoss(AverageKLoss):
    r"""WAN: AN with each negative term weighted :math:`1/(C-1)`.

    Example:
        >>> terms = WeakAssumeNegativeLoss()(None, torch.zeros(1, 4), torch.tensor([0]))
        >>> round(float(terms["loss"]), 4)  # (log 2 + 3 * log(2) / 3) / 4
        0.3466
    """

    name = "wan"

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        num_classes = multilabel_logits.shape[1]
        observed = _observed(target, num_classes)
        positive = -F.logsigmoid(multilabel_logits) * observed
        negative = -F.logsigmoid(-multilabel_logits) * ~observed / (num_classes - 1)
        return {"loss": (positive + negative).mean(), "positive": positive.mean(), "negative": negative.mean()}


class ExpectedPositiveLoss(AverageKLoss):
    """EPR: the positive term only, plus the expected-positive regulariser towards `k` positives per sample.

    Args:
        k: expected number of positives per sample (the module's K).

    Example:
        >>> terms = ExpectedPositiveLoss(k=1.0)(None, torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(terms["loss"]), 4)  # log(2) / 4 + (2 - 1)^2 / 16
        0.2358
    """

    name = "epr"

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = float(k)

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1])
        positive = (-F.logsigmoid(multilabel_logits) * observed).mean()
        regulariser = expected_positive_regulariser(multilabel_logits.sigmoid(), self.k)
        return {"loss": positive + regulariser, "positive": positive, "regulariser": regulariser}


class EntropyMaximisationLoss(AverageKLoss):
    r"""EM: the positive term, minus `alpha` times the binary entropy of each unobserved score.

    :math:`\ell = [j = y](-\log g_j) - \alpha [j \neq y] H(g_j)`, :math:`H(g) = -g\log g - (1-g)\log(1-g)`.

    Args:
        alpha: weight of the entropy term; default 0.1.

    Example:
        >>> terms = EntropyMaximisationLoss(alpha=0.1)(None, torch.zeros(1, 4), torch.tensor([0]))
        >>> round(float(terms["loss"]), 4)  # (log 2 - 0.1 * 3 * log 2) / 4
        0.1213
    """

    name = "em"

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        if alpha < 0:
            raise InvalidInputError(f"Expected argument `alpha` to be >= 0, but got {alpha!r}")
        self.alpha = alpha

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        observed = _observed(target, multilabel_logits.shape[1])
        log_score, log_complement = F.logsigmoid(multilabel_logits), F.logsigmoid(-multilabel_logits)
        entropy = -(log_score.exp() * log_score + log_complement.exp() * log_complement)
        positive = (-log_score * observed).mean()
        unobserved_entropy = (entropy * ~observed).mean()
        return {
            "loss": positive - self.alpha * unobserved_entropy,
            "positive": positive,
            "unobserved_entropy": unobserved_entropy,
        }


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


class RegularisedOnlineLabelEstimationLoss(AverageKLoss):
    r"""ROLE: the classifier and a label-estimate matrix teach each other, with EPR on both.

    A matrix of estimate logits :math:`Z` (one row per training sample, :math:`\hat y = \sigma(Z)`) is
    learned jointly. Per entry, classifier and estimator each get half of the observed-positive term
    and half of the BCE against the other's detached output, plus half the EPR of each:

    .. math::
        \ell = \tfrac12[j = y](-\log g_j - \log \hat y_j) + \tfrac12\,\mathrm{BCE}(g_j, \bar{\hat y}_j)
        + \tfrac12\,\mathrm{BCE}(\hat y_j, \bar g_j) + \tfrac12(R(g) + R(\hat y))

    (bars: detached; R: :func:`expected_positive_regulariser`). The returned loss trains the network;
    the estimator's part (added to the logged value, detached) updates the batch's rows of :math:`Z` in place by one SGD step of
    `estimator_lr` on its per-entry gradient (the gradient of the batch loss times B·C, so the step
    does not depend on batch size or class count). Rows start uniform in
    :math:`[-\mathrm{logit}(0.6), \mathrm{logit}(0.6)]` (a fixed seed: identical on every process) and
    the observed label's entry is set to :math:`\mathrm{logit}(0.995)` when a sample is first seen.

    Under DDP each process updates the rows of its own samples; :meth:`synchronize` merges them at the
    end of every training epoch with one all-reduce of the matrix (rows updated by several processes,
    e.g. a sample repeated by the sampler's padding, get the mean of their updates). The matrix is
    saved in checkpoints (N·C float32 values: 1 GB for Pl@ntNet-300K).

    Args:
        k: expected number of positives per sample in the regulariser (the module's K).
        estimator_lr: step size of the label estimator; default 1.0.

    Example:
        >>> loss = RegularisedOnlineLabelEstimationLoss(k=1.0)
        >>> loss.setup_samples(num_samples=10)
        >>> terms = loss(None, torch.zeros(2, 4), torch.tensor([0, 3]), sample_indices=torch.tensor([7, 2]))
        >>> sorted(terms), round(float(loss.estimate_logits[7, 0]), 3) < _logit(0.995)  # row 7 was updated
        (['estimator', 'loss', 'positive', 'regulariser'], True)
    """

    name = "role"
    uses_sample_indices = True
    _INITIAL_SPREAD = 0.6
    _INITIAL_POSITIVE = 0.995

    def __init__(self, k: float, estimator_lr: float = 1.0) -> None:
        super().__init__()
        if estimator_lr <= 0:
            raise InvalidInputError(f"Expected argument `estimator_lr` to be > 0, but got {estimator_lr!r}")
        self.k = float(k)
        self.estimator_lr = estimator_lr
        # Plain tensors, not buffers: kept out of the DDP broadcasts and the weights, saved by extra_state.
        self.estimate_logits: Tensor | None = None
        self.seen: Tensor | None = None
        self._updated: Tensor | None = None  # rows this process changed since the last synchronize
        self._pending = False  # some batch was trained since the last synchronize (the same on every process)
        self._num_samples: int | None = None  # rows of the matrix, from setup_samples or a checkpoint

    def setup_samples(self, num_samples: int) -> None:
        if self.estimate_logits is not None and self.estimate_logits.shape[0] == num_samples:
            return
        if self.estimate_logits is not None:
            raise InvalidInputError(
                f"The ROLE label estimates have {self.estimate_logits.shape[0]} rows (one per training sample of "
                f"the checkpoint), but the training split has {num_samples} samples: resume on the same data."
            )
        self._num_samples = num_samples

    def _initialise(self, num_classes: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(0)
        spread = _logit(self._INITIAL_SPREAD)
        logits = (torch.rand(self._num_samples, num_classes, generator=generator) * 2 - 1) * spread
        self.estimate_logits = logits.to(device)
        self.seen = torch.zeros(self._num_samples, dtype=torch.bool, device=device)

    def forward(self, softmax_logits, multilabel_logits, target, pseudo_labels=None, sample_indices=None):
        if sample_indices is None:
            raise InvalidInputError("ROLE needs the dataset index of each training sample (`sample_indices`)")
        num_classes = multilabel_logits.shape[1]
        if self.estimate_logits is None:
            if self._num_samples is None:
                raise InvalidInputError("ROLE: call setup_samples(num_samples) before training")
            self._initialise(num_classes, multilabel_logits.device)
        if self.estimate_logits.device != multilabel_logits.device:
            self.estimate_logits = self.estimate_logits.to(multilabel_logits.device)
            self.seen = self.seen.to(multilabel_logits.device)
        if self._updated is None or self._updated.device != multilabel_logits.device:
            self._updated = torch.zeros(
                self.estimate_logits.shape[0], dtype=torch.bool, device=multilabel_logits.device
            )
        indices = sample_indices.long()
        observed = _observed(target, num_classes)
        rows = self.estimate_logits[indices]
        first_visit = ~self.seen[indices]
        rows = torch.where(
            first_visit.unsqueeze(1) & observed, torch.full_like(rows, _logit(self._INITIAL_POSITIVE)), rows
        )

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
        self.estimate_logits[indices] = (estimate_rows - step).detach()
        self.seen[indices] = True
        self._updated[indices] = True
        self._pending = True
        return {
            "loss": classifier + estimator.detach(),  # the whole ROLE objective; its gradient trains the network
            "positive": positive,
            "regulariser": regulariser,
            "estimator": estimator.detach(),
        }

    def synchronize(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        if not self._pending:
            return
        updated = self._updated.to(self.estimate_logits.dtype).unsqueeze(1)
        payload = torch.cat([self.estimate_logits * updated, updated, self.seen.unsqueeze(1).float()], dim=1)
        payload = reduce_sum(payload)
        counts = payload[:, -2:-1]
        merged = payload[:, :-2] / counts.clamp_min(1)
        self.estimate_logits = torch.where(counts > 0, merged, self.estimate_logits)
        self.seen = payload[:, -1] > 0
        self._updated.zero_()
        self._pending = False

    def extra_state(self) -> dict[str, Any]:
        if self.estimate_logits is None:
            return {}
        return {"estimate_logits": self.estimate_logits.cpu(), "seen": self.seen.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
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
        device = self.estimate_logits.device if self.estimate_logits is not None else "cpu"
        self.estimate_logits = state["estimate_logits"].to(device)
        self.seen = state["seen"].to(device)
        self._updated = None


def _resolve_loss_class(method: str) -> type[AverageKLoss]:
    if method in LOSSES:
        return LOSSES[method]
    if "." in method:
        module_name, _, class_name = method.rpartition(".")
        try:
            loss_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise InvalidInputError(f"Cannot import loss class {method!r} (argument `method`): {error}") from error
        if not (isinstance(loss_class, type) and issubclass(loss_class, AverageKLoss)):
            raise InvalidInputError(f"{method!r} (argument `method`) is not a subclass of AverageKLoss")
        return loss_class
    raise InvalidInputError(
        f"Expected argument `method` to be one of {sorted(LOSSES)} or the dotted path of an AverageKLoss "
        f"subclass, but got {method!r}"
    )


def build_loss(
    method: str,
    num_classes: int | None = None,
    k: float = 1.0,
    mu: float = 1.0,
    options: Mapping[str, Any] | None = None,
) -> AverageKLoss:
    """The loss registered under `method` (or at the dotted class path `method`), built with its options.

    ``num_classes``, ``k`` and ``mu`` reach the constructors that take them; `options` are the loss's
    own keyword arguments (``--model.loss_options``), and one it does not take is an error.

    Example:
        >>> build_loss("two_head").set_head
        'multilabel'
        >>> build_loss("em", options={"alpha": 0.2}).alpha
        0.2
    """
    loss_class = _resolve_loss_class(method)
    options = dict(options or {})
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [
        name
        for name, parameter in inspect.signature(loss_class.__init__).parameters.items()
        if name != "self" and parameter.kind in named
    ]
    context = {"num_classes": num_classes, "k": k, "mu": mu}
    for name in context:
        if name in options:
            raise InvalidInputError(
                f"`{name}` is set by the module's own argument (--model.{name}), not by `loss_options`"
            )
    unknown = [name for name in options if name not in accepted]
    if unknown:
        own = [name for name in accepted if name not in context]
        raise InvalidInputError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} in argument `loss_options` for method {method!r}:"
            f" it takes {', '.join(map(repr, own)) or 'no options'}"
        )
    return loss_class(**{name: value for name, value in context.items() if name in accepted}, **options)
