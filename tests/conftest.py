"""Shared fixtures. Importable helpers live in tests/helpers.py, the on-disk data writers in tests/fixtures.py."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture()
def run_root(tmp_path: Path) -> Path:
    """A fresh `--trainer.default_root_dir` for CLI runs (tmp_path/runs; the CLI creates version_N below it)."""
    return tmp_path / "runs"
