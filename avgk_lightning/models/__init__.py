"""Networks of avgk-lightning: backbone construction, the two-headed network, and the library's own backbones.

The backbones (``small_vgg``, ``small_resnet``, ``densenet_bc_40_40``) are registered with timm's model registry when
avgk_lightning is imported: each one is created like any timm model, e.g. ``timm.create_model("small_vgg",
num_classes=0)``, and is selected in a config with ``--model.init_args.backbone NAME``.
"""

from avgk_lightning.models.backbones import create_backbone, load_backbone_weights
from avgk_lightning.models.densenet_bc import DenseNetBC, densenet_bc_40_40
from avgk_lightning.models.network import HEADS, TwoHeadNetwork
from avgk_lightning.models.small_resnet import SmallResNet, small_resnet
from avgk_lightning.models.small_vgg import SmallVGG, small_vgg

__all__ = [
    "HEADS",
    "DenseNetBC",
    "SmallResNet",
    "SmallVGG",
    "TwoHeadNetwork",
    "create_backbone",
    "densenet_bc_40_40",
    "load_backbone_weights",
    "small_resnet",
    "small_vgg",
]
