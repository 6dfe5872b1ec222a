"""`fit` on 2 DDP processes, then `test`, `validate` and `predict` from its checkpoint on 1 and on 2 processes.

Every command is `python train.py ...` in a subprocess, as a user runs it (Lightning's launcher starts
the second rank); the test and validation splits have odd sizes (203 and 201 samples). `fit` checkpoints
every 4 training steps (10 per epoch, 2 epochs), so best.ckpt (step 12) holds the λ_K of the validation at
step 10: `test` and `predict` calibrate it again first, and `fit` validates its final weights (step 20)
before it writes last.ckpt once more, on both processes. Each process group is killed at the end, whatever
happens, so nothing is left behind.
"""

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from avgk_lightning.checkpoint import calibration_lag
from tests.helpers import assert_same_metrics, checkpoint_of, cli_args, train_py

COMMON = [
    *cli_args(train_size=600, val_size=201, test_size=203, batch_size=32),
    "--model.init_args.backbone=small_resnet",  # a narrow ResNet-8: the processes, not the network, are tested
    "--trainer.accelerator=cpu",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.init_args.save_dir=.",
]
DDP = ["--trainer.devices=2", "--trainer.strategy=ddp"]


def _train_py(args, root):
    code, output = train_py(args[0], *COMMON, *args[1:], f"--trainer.default_root_dir={root}")
    assert code == 0, output[-4000:]


def _logged(run_dir: Path, prefix: str) -> dict[str, float]:
    (metrics_file,) = run_dir.glob("**/metrics.csv")
    values = {}
    with open(metrics_file) as handle:
        for row in csv.DictReader(handle):
            values.update({name: float(value) for name, value in row.items() if name.startswith(prefix) and value})
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_cli")
    _train_py(["fit", *DDP, "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=4"], root)  # version_0
    checkpoint = checkpoint_of(root)
    assert calibration_lag(torch.load(checkpoint, weights_only=True)) == (10, 12)
    _train_py(["test", "--trainer.devices=1", f"--ckpt_path={checkpoint}"], root)  # version_1
    _train_py(["test", *DDP, f"--ckpt_path={checkpoint}"], root)  # version_2
    _train_py(["validate", "--trainer.devices=1", f"--ckpt_path={checkpoint}"], root)  # version_3
    _train_py(["validate", *DDP, f"--ckpt_path={checkpoint}"], root)  # version_4
    _train_py(["predict", "--trainer.devices=1", f"--ckpt_path={checkpoint}"], root)  # version_5
    _train_py(["predict", *DDP, f"--ckpt_path={checkpoint}"], root)  # version_6
    return root


@pytest.mark.slow
def test_test_metrics_are_the_same_on_one_and_two_processes(runs):
    single, distributed = _logged(runs / "version_1", "test/"), _logged(runs / "version_2", "test/")
    assert "test/avgk_acc@2" in single and "test/softmax/avgk_acc_macro@10" in single
    assert_same_metrics(single, distributed, rel=1e-5, absolute=1e-6)


@pytest.mark.slow
def test_validate_metrics_are_the_same_on_one_and_two_processes(runs):
    single, distributed = _logged(runs / "version_3", "val/"), _logged(runs / "version_4", "val/")
    assert "val/oracle/avgk_acc@3" in single
    assert_same_metrics(single, distributed, rel=1e-5, absolute=1e-6)


@pytest.mark.slow
def test_ddp_fit_ran_two_ranks_in_one_run_dir(runs):
    assert sorted(path.name for path in runs.iterdir()) == [f"version_{i}" for i in range(7)]
    for version, devices in ((0, 2), (1, 1), (2, 2), (3, 1), (4, 2), (5, 1), (6, 2)):
        (config,) = (runs / f"version_{version}").glob("**/config.yaml")
        assert re.search(f"\n  devices: '?{devices}'?\n", config.read_text())
    assert _logged(runs / "version_0", "val/")["val/set_size@2"] == pytest.approx(2, abs=0.05)
    last = torch.load(checkpoint_of(runs, "last.ckpt"), weights_only=True)  # the final weights, validated
    assert last["global_step"] == 20 and last["average_k"]["calibrated_at_step"] == 20


@pytest.mark.slow
def test_predicted_sets_are_the_same_on_one_and_two_processes(runs):
    single, distributed = (
        [json.loads(line) for line in (runs / f"version_{version}" / "predictions.jsonl").read_text().splitlines()]
        for version in (5, 6)
    )
    assert [line["index"] for line in distributed] == list(range(203))  # merged in order, none lost or repeated
    assert not list((runs / "version_6").glob("*.part"))
    for one, two in zip(single, distributed):
        assert one["class_indices"] == two["class_indices"] and one["path"] == two["path"]
        assert one["scores"] == pytest.approx(two["scores"], abs=1e-5)
