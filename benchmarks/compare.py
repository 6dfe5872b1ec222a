"""The commands quoted in the older results files: ``python benchmarks/compare.py ...`` runs ``avgk-compare ...``.

The comparison tool lives in the package (:mod:`avgk_lightning.study`); ``avgk-compare --help`` lists its options.
"""

from avgk_lightning.study.cli import main

if __name__ == "__main__":
    main(prog="python benchmarks/compare.py")
