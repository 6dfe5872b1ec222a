"""Train, validate, test and predict average-K classifiers: `python train.py --help`."""

from avgk_lightning.cli import AverageKCLI
from avgk_lightning.module import TwoHeadModule
from avgk_lightning.data.base import AverageKDataModule


def main() -> None:
    AverageKCLI(
        TwoHeadModule,
        AverageKDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": False},
    )


if __name__ == "__main__":
    main()
