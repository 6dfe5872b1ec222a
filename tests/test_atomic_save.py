"""A process killed while it writes a checkpoint leaves the previous checkpoint whole and loadable."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "tests.kill_during_save", str(tmp_path)],
        check=False,  # the test reads the return code and stderr itself
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # whole: it unpickles
    assert saved["epoch"] == 0  # the first epoch's save, not the interrupted second one
    assert saved["callbacks"]["PseudoLabelThreshold"]["threshold"] is not None
    for path in tmp_path.glob("*.ckpt"):  # no truncated file anywhere
        torch.load(path, weights_only=True)
