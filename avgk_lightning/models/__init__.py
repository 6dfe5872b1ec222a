"""Backbones of avgk-lightning, registered with timm's model registry when avgk_lightning is imported.

Each one is created like any timm model, e.g. ``timm.create_model("small_vgg", num_classes=0)``, and is
selected in a config with ``--model.init_args.backbone NAME``.
"""

from avgk_lightning.models.small_vgg import SmallVGG, small_vgg

__all__ = ["SmallVGG", "small_vgg"]
