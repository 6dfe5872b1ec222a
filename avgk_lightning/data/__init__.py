"""Lightning data modules of avgk-lightning."""

from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.data.synthetic import SyntheticAmbiguityDataModule

__all__ = ["AverageKDataModule", "SyntheticAmbiguityDataModule"]
