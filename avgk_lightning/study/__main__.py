"""``python -m avgk_lightning.study``: the same as the ``avgk-compare`` console script."""

from avgk_lightning.study.cli import main

main(prog="python -m avgk_lightning.study")
