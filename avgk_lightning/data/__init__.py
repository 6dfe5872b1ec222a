"""Lightning data modules of avgk-lightning."""

from avgk_lightning.data.base import AverageKDataModule
from avgk_lightning.data.cifar import CIFAR100DataModule
from avgk_lightning.data.fashion_mnist import FashionMNISTDataModule
from avgk_lightning.data.folder import ImageFolderDataModule
from avgk_lightning.data.plantnet import PlantNet300KDataModule
from avgk_lightning.data.synthetic import SyntheticAmbiguityDataModule

__all__ = [
    "AverageKDataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "PlantNet300KDataModule",
    "SyntheticAmbiguityDataModule",
]
