"""The test-time figures: drawn from real test results, saved without replacing files, and sent to W&B."""

from __future__ import annotations

import torch
from lightning.pytorch.loggers import WandbLogger

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.plots import TestPlots
from tests.helpers import TinyCNNModule, cpu_trainer

NAMES = ("set_size_histogram", "accuracy_against_k", "per_class_accuracy_against_frequency")


def _log_image(self, key, images, **kwargs):
    self.logged_images.append((key, images))


def test_figures_are_saved_in_the_run_dir_and_logged_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(WandbLogger, "log_image", _log_image)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    logger.logged_images = []
    torch.manual_seed(0)
    data = SyntheticAmbiguityDataModule(train_size=256, val_size=128, test_size=129, batch_size=64)
    counts = data.class_counts.tolist()  # the CLI links them; here by hand
    model = TinyCNNModule(num_classes=40, k=2, eval_ks=[1, 2, 3], class_counts=counts, frequency_boundaries=(5, 10))
    plots = TestPlots()
    trainer = cpu_trainer(default_root_dir=tmp_path, max_epochs=1, callbacks=[plots], logger=logger)
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    assert [path.name for path in plots.paths] == [f"{name}.png" for name in NAMES]
    for path in plots.paths:  # PNG files in the run directory, with something drawn in them
        assert path.parent == tmp_path / "plots" and path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [key for key, _ in logger.logged_images] == [f"test/plots/{name}" for name in NAMES]
    trainer.test(model, data, verbose=False)  # a second test never replaces the first figures
    assert [path.name for path in plots.paths] == [f"{name}-1.png" for name in NAMES]
