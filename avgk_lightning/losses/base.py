"""The base of every training objective, and the registry that maps a `method` name to its class."""

from __future__ import annotations

import importlib
import inspect
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch  # noqa: F401  (used by the doctest)
import torch.nn.functional as F  # noqa: F401  (used by the doctest)
from torch import Tensor, nn

from avgk_lightning.epoch_state import EpochState
from avgk_lightning.errors import InvalidInputError

__all__ = ["LOSSES", "AverageKLoss", "build_loss"]

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
        if cls.set_head not in cls.trained_heads or not set(cls.trained_heads) <= {"softmax", "multilabel"}:
            raise InvalidInputError(
                f"Loss {cls.__qualname__}: `trained_heads` {cls.trained_heads!r} must be among ('softmax', "
                f"'multilabel') and include `set_head` {cls.set_head!r}"
            )
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

    def options(self) -> dict[str, Any]:
        """The loss's own constructor arguments as it holds them, defaults resolved: what a resumed run must share.

        Example:
            >>> from avgk_lightning.losses import TwoHeadLoss
            >>> TwoHeadLoss(mu=0.5).options()
            {'mu': 0.5, 'bce_reduction': 'mean', 'warmup_epochs': 0}
        """
        names = [name for name in inspect.signature(type(self).__init__).parameters if name not in ("self", "k")]
        return {
            name: getattr(self, name)
            for name in names
            if isinstance(getattr(self, name, None), (bool, int, float, str))
        }

    def epoch_states(self) -> dict[str, EpochState]:
        """Per-epoch training state by name: merged across processes at every epoch end, saved in checkpoints.

        See :mod:`avgk_lightning.epoch_state`; ROLE's label estimates are one. None by default.
        """
        return {}


def resolve_loss_class(method: str) -> type[AverageKLoss]:
    """The loss class registered under `method`, or at the dotted class path `method`.

    Example:
        >>> resolve_loss_class("two_head").__name__, resolve_loss_class("avgk_lightning.losses.SoftmaxLoss").__name__
        ('TwoHeadLoss', 'SoftmaxLoss')
    """
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
    loss_class = resolve_loss_class(method)
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
