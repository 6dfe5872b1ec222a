"""A run killed by a signal after an epoch's checkpoint and resumed ends exactly like an uninterrupted one."""

import shutil
import signal

import pytest
import torch

from tests.helpers import checkpoint_of, cli_args, cli_in_process, train_py

COMMON = [
    *cli_args(max_epochs=3, train_size=640, val_size=256, test_size=257, batch_size=64),
    "--model.init_args.backbone=small_resnet",  # a narrow ResNet-8: the resumption, not the network, is tested
    "--trainer.deterministic=true",
    "--trainer.logger=false",
    "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.MultiStepLR",
    "--model.init_args.lr_scheduler.init_args.milestones=[2]",
]


def _fit(root, *extra):
    return train_py("fit", *COMMON, f"--trainer.default_root_dir={root}", *extra)


def _test_metrics(root, checkpoint):
    cli = cli_in_process(["test", *COMMON, f"--trainer.default_root_dir={root}", f"--ckpt_path={checkpoint}"])
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    code, output = _fit(root / "first")
    assert code == 0, output[-3000:]
    code, output = _fit(root / "second")
    assert code == 0, output[-3000:]
    code, output = _fit(
        root / "killed", "--trainer.callbacks+=tests.helpers.KillAtEpochStart", "--trainer.callbacks.epoch=2"
    )
    assert code == -signal.SIGKILL, output[-3000:]
    killed_checkpoint = checkpoint_of(root / "killed", "last.ckpt")
    shutil.copy(killed_checkpoint, root / "at_the_kill.ckpt")
    code, output = _fit(root / "killed", "--ckpt_path=last")  # resumes version_0 in place
    assert code == 0, output[-3000:]
    return root


@pytest.mark.slow
def test_the_killed_run_stopped_after_its_second_epoch(runs):
    saved = torch.load(runs / "at_the_kill.ckpt", weights_only=True)
    assert saved["epoch"] == 1
    assert saved["callbacks"]["PseudoLabelThreshold"]["threshold"] is not None
    assert saved["average_k"]["thresholds"]["multilabel"]


@pytest.mark.slow
def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_run(runs):
    uninterrupted = _test_metrics(runs / "first", checkpoint_of(runs / "first", "last.ckpt"))
    resumed = _test_metrics(runs / "killed", checkpoint_of(runs / "killed", "last.ckpt"))
    assert "test/avgk_acc@2" in uninterrupted
    assert resumed == uninterrupted


@pytest.mark.slow
def test_ckpt_path_last_resumes_in_place_and_keeps_both_configs(runs):
    run_dir = runs / "killed" / "version_0"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config-1.yaml").is_file()
    assert "ckpt_path: last" not in (run_dir / "config-1.yaml").read_text()  # the resolved path is recorded


@pytest.mark.slow
def test_same_seed_same_config_same_metrics(runs):
    first = _test_metrics(runs / "first", checkpoint_of(runs / "first", "last.ckpt"))
    second = _test_metrics(runs / "second", checkpoint_of(runs / "second", "last.ckpt"))
    assert first == second
