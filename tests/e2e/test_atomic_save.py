"""A process killed while it writes a checkpoint leaves the previous checkpoint whole and loadable."""

import signal

import torch

from tests.helpers import run_script


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    code, output = run_script("kill_during_save", tmp_path, timeout=300)
    assert code == -signal.SIGKILL, output[-3000:]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # whole: it unpickles
    assert saved["epoch"] == 0  # the first epoch's save, not the interrupted second one
    assert saved["callbacks"]["PseudoLabelThreshold"]["threshold"] is not None
    for path in tmp_path.glob("*.ckpt"):  # no truncated file anywhere
        torch.load(path, weights_only=True)
