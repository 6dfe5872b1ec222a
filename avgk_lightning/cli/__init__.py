"""The command line of ``train.py`` (LightningCLI), split by policy.

* :mod:`~avgk_lightning.cli.app`: :class:`AverageKCLI` (callbacks, argument links) and :func:`run_cli`
  (error lines instead of tracebacks);
* :mod:`~avgk_lightning.cli.run_dirs`: one new ``version_N`` directory per run, resumed runs, versioned configs;
* :mod:`~avgk_lightning.cli.checkpoint_args`: ``--ckpt_path`` checks and the arguments it overrides;
* :mod:`~avgk_lightning.cli.calibration`: λ_K calibrated for the weights that ``test``, ``predict`` and
  ``fit``'s last.ckpt use, where a checkpoint was written between two validations;
* :mod:`~avgk_lightning.cli.wandb_offline`: W&B falls back to offline logging instead of blocking.
"""

from avgk_lightning.cli.app import AverageKCLI, main, run_cli
from avgk_lightning.cli.run_dirs import VersionedSaveConfigCallback, latest_last_checkpoint, new_run_dir

__all__ = ["AverageKCLI", "VersionedSaveConfigCallback", "latest_last_checkpoint", "main", "new_run_dir", "run_cli"]
