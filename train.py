"""Train, validate, test and predict average-K classifiers: `python train.py --help`."""

from avgk_lightning.cli import run_cli

if __name__ == "__main__":
    run_cli()
