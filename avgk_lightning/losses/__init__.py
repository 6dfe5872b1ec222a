r"""Training objectives of average-K classification, one registry keyed by the `method` name.

Every loss is an :class:`AverageKLoss`: one :meth:`~AverageKLoss.forward` returning the total and its
named terms, plus class attributes saying which heads it trains and which head makes the sets.

* :mod:`~avgk_lightning.losses.two_head`: ``two_head`` (the paper's loss) and ``softmax`` (its plug-in
  baseline);
* :mod:`~avgk_lightning.losses.baselines`: the single-positive multi-label baselines ``an``, ``an_ls``,
  ``wan``, ``epr``, ``em``;
* :mod:`~avgk_lightning.losses.role`: ``role``, with its per-sample label estimates.
"""

from avgk_lightning.losses.base import LOSSES, AverageKLoss, build_loss, resolve_loss_class
from avgk_lightning.losses.baselines import (
    AssumeNegativeLoss,
    EntropyMaximisationLoss,
    ExpectedPositiveLoss,
    LabelSmoothingAssumeNegativeLoss,
    WeakAssumeNegativeLoss,
    expected_positive_regulariser,
)
from avgk_lightning.losses.role import LabelEstimates, RegularisedOnlineLabelEstimationLoss
from avgk_lightning.losses.two_head import SoftmaxLoss, TwoHeadLoss

__all__ = [
    "LOSSES",
    "AssumeNegativeLoss",
    "AverageKLoss",
    "EntropyMaximisationLoss",
    "ExpectedPositiveLoss",
    "LabelEstimates",
    "LabelSmoothingAssumeNegativeLoss",
    "RegularisedOnlineLabelEstimationLoss",
    "SoftmaxLoss",
    "TwoHeadLoss",
    "WeakAssumeNegativeLoss",
    "build_loss",
    "expected_positive_regulariser",
    "resolve_loss_class",
]
