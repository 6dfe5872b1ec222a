"""Stopped mid-run and resumed with ``--ckpt_path last``: nothing differs from the uninterrupted run.

Three schedules whose checkpoints do not fall at the end of a training epoch: validation every second epoch
(the checkpoint is written at validation end, before the epoch's end hooks), validation twice per epoch and a
checkpoint every 3 training steps (both write checkpoints in the middle of an epoch). Each run is killed with
SIGKILL in the middle of an epoch, then resumed. A fourth run gets SIGTERM, as a cluster scheduler sends it,
in the middle of an epoch: it writes last.ckpt there and exits with status 143. A fifth is a SLURM job
pre-empted through Lightning's auto-requeue (SIGUSR1: ``hpc_ckpt_N.ckpt``, then the kill) and started again.
Each resumed run's test metrics must equal an uninterrupted run's exactly, and so must the λ_pl and the
samples of every batch.
"""

import json
import signal

import pytest
import torch

from tests.helpers import checkpoint_of, cli_args, cli_in_process, train_py

COMMON = [
    *cli_args(train_size=640, val_size=128, test_size=129, batch_size=64),  # 10 training batches per epoch
    "--model.init_args.backbone=small_resnet",  # a narrow ResNet-8: the schedules, not the network, are tested
    "--trainer.deterministic=true",
    "--trainer.logger=false",
    "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.MultiStepLR",
    "--model.init_args.lr_scheduler.init_args.milestones=[2]",
]
KILL, TERM = "tests.helpers.KillAtStep", "tests.helpers.TerminateAtStep"
SCHEDULES = {  # arguments, epochs, the signal sent at a global step, the exit status, the step of last.ckpt then
    "validation_every_2_epochs": (["--trainer.check_val_every_n_epoch=2"], 4, (KILL, 25), -signal.SIGKILL, 20),
    "validation_twice_per_epoch": (["--trainer.val_check_interval=0.5"], 3, (KILL, 17), -signal.SIGKILL, 15),
    "checkpoint_every_3_steps": (["--checkpoint.every_n_train_steps=3"], 3, (KILL, 17), -signal.SIGKILL, 15),
    "sigterm_mid_epoch": ([], 3, (TERM, 17), 143, 18),  # the batch under way ends, then last.ckpt is written
}
# Schedules that change only when checkpoints are written train exactly as the plain 3-epoch run: they are
# compared with that one run (trained once for the module), which also shows that the extra checkpoints
# change nothing in the training.
PLAIN = "sigterm_mid_epoch"
SAME_TRAINING_AS_PLAIN = {"checkpoint_every_3_steps", PLAIN}


def _fit(root, schedule, *extra):
    arguments, epochs, *_ = SCHEDULES[schedule]
    record = [
        "--trainer.callbacks+=tests.helpers.RecordPseudoLabelThresholds",
        f"--trainer.callbacks.path={root}.jsonl",
    ]
    run = [f"--trainer.max_epochs={epochs}", *arguments, f"--trainer.default_root_dir={root}"]
    return train_py("fit", *COMMON, *run, *record, *extra)


def _batches(root):
    """λ_pl and samples per (epoch, batch); a batch trained again after the resume keeps its last record."""
    records = [json.loads(line) for line in root.with_suffix(".jsonl").read_text().splitlines()]
    return {(record["epoch"], record["batch"]): (record["threshold"], record["samples"]) for record in records}


def _test_metrics(root, schedule):
    arguments, epochs, *_ = SCHEDULES[schedule]
    args = ["test", *COMMON, f"--trainer.max_epochs={epochs}", *arguments, f"--trainer.default_root_dir={root}"]
    cli = cli_in_process([*args, f"--ckpt_path={checkpoint_of(root, 'last.ckpt')}"])
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items()}


def _uninterrupted(root, schedule):
    code, output = _fit(root, schedule)
    assert code == 0, output[-3000:]
    return root


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The uninterrupted plain 3-epoch run (its root)."""
    return _uninterrupted(tmp_path_factory.mktemp("plain") / "uninterrupted", PLAIN)


@pytest.fixture(scope="module", params=list(SCHEDULES))
def runs(request, tmp_path_factory):
    schedule = request.param
    root = tmp_path_factory.mktemp(schedule)
    if schedule in SAME_TRAINING_AS_PLAIN:
        uninterrupted = request.getfixturevalue("plain_run")
    else:
        uninterrupted = _uninterrupted(root / "uninterrupted", schedule)
    _, _, (stop, step), status, _ = SCHEDULES[schedule]
    code, output = _fit(root / "killed", schedule, f"--trainer.callbacks+={stop}", f"--trainer.callbacks.step={step}")
    assert code == status, output[-3000:]
    if stop == TERM:
        last = checkpoint_of(root / "killed", "last.ckpt")
        assert output.strip().splitlines()[-1] == (
            f"Stopped by SIGTERM at epoch 1, global step 18: saved {last}. Resume with the same command and "
            "--ckpt_path last."
        )
    at_kill = torch.load(checkpoint_of(root / "killed", "last.ckpt"), weights_only=True)
    code, output = _fit(root / "killed", schedule, "--ckpt_path=last")
    assert code == 0, output[-3000:]
    return schedule, uninterrupted, root / "killed", at_kill


@pytest.mark.slow
def test_the_run_was_stopped_after_a_checkpoint_that_is_not_at_an_epoch_end(runs):
    schedule, _, _, at_kill = runs
    assert at_kill["global_step"] == SCHEDULES[schedule][-1]


@pytest.mark.slow
def test_every_batch_of_the_resumed_run_has_the_samples_and_threshold_of_the_uninterrupted_one(runs):
    _, uninterrupted_root, resumed_root, _ = runs
    uninterrupted, resumed = _batches(uninterrupted_root), _batches(resumed_root)
    assert resumed.keys() == uninterrupted.keys()
    assert sum(threshold is not None for threshold, _ in uninterrupted.values()) >= 20  # λ_pl from epoch 1 on
    assert resumed == uninterrupted


@pytest.mark.slow
def test_the_resumed_run_ends_with_the_test_metrics_of_the_uninterrupted_one(runs):
    schedule, uninterrupted_root, resumed_root, _ = runs
    uninterrupted = _test_metrics(uninterrupted_root, schedule)
    assert "test/avgk_acc@2" in uninterrupted
    assert _test_metrics(resumed_root, schedule) == uninterrupted


SLURM = {  # a single-task SLURM job as srun starts it; scontrol is absent here, so the requeue itself fails
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_JOB_ID": "42",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}


@pytest.mark.slow
def test_lightnings_slurm_auto_requeue_resumes_exactly_from_its_hpc_checkpoint(tmp_path, monkeypatch, plain_run):
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    job = tmp_path / "job_42"  # under srun train.py uses default_root_dir as given: the requeued job's too
    requeue = ["--trainer.callbacks+=tests.helpers.RequeueAtStep", "--trainer.callbacks.step=17"]
    code, output = _fit(job, PLAIN, *requeue)
    assert code == -signal.SIGKILL, output[-3000:]
    assert torch.load(job / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 17
    code, output = _fit(job, PLAIN)  # the requeued job: the same command
    assert code == 0, output[-3000:]
    assert f"Restored all states from the checkpoint at {job / 'hpc_ckpt_1.ckpt'}" in output
    assert _batches(job) == _batches(plain_run)
    arguments = ["test", *COMMON, "--trainer.max_epochs=3"]
    for name in SLURM:
        monkeypatch.delenv(name)
    checkpoints = {
        "uninterrupted": checkpoint_of(plain_run, "last.ckpt"),
        "requeued": job / "checkpoints" / "last.ckpt",
    }
    tested = {}
    for run, checkpoint in checkpoints.items():
        root = f"--trainer.default_root_dir={tmp_path / run}-test"
        cli = cli_in_process([*arguments, root, f"--ckpt_path={checkpoint}"])
        tested[run] = {name: float(value) for name, value in cli.trainer.callback_metrics.items()}
    assert tested["requeued"] == tested["uninterrupted"]
