"""avgk-lightning: average-K classification with the two-head loss, for PyTorch Lightning."""

from avgk_lightning import models  # noqa: F401  (registers the library's backbones with timm)
from avgk_lightning.callbacks import PseudoLabelThreshold
from avgk_lightning.module import TwoHeadModule

__all__ = ["PseudoLabelThreshold", "TwoHeadModule"]
__version__ = "0.2.0"
