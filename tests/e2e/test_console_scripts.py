"""The console scripts that `pip install` puts beside Python: avgk-train, avgk-export, avgk-prepare and avgk-compare."""

import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_process_group


def _script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{path} is missing: `pip install -e .` (as `make` does) installs it"
    return str(path)


def test_avgk_train_is_train_py():
    config = str(ROOT / "configs" / "synthetic_two_head.yaml")
    code, output = run_process_group([_script("avgk-train"), "fit", "--config", config, "--print_config"])
    assert code == 0, output[-2000:]
    assert "class_path: avgk_lightning.TwoHeadModule" in output and "k: 2" in output


@pytest.mark.parametrize(
    "command, message",
    [
        (
            ["avgk-train", "test", "--config", "configs/synthetic_two_head.yaml", "--ckpt_path", "none.ckpt"],
            "error: Checkpoint not found: none.ckpt",
        ),
        (["avgk-export", "none.ckpt", "--output", "predictor.pt"], "error: Checkpoint not found: none.ckpt"),
        (["avgk-prepare", "no_such_folder", "copy"], "error: "),
        (
            ["avgk-compare", "--methods=two_head,nope"],
            "avgk-compare: error: unknown method(s) nope (argument --methods)",
        ),
    ],
    ids=["avgk-train", "avgk-export", "avgk-prepare", "avgk-compare"],
)
def test_each_script_ends_a_bad_input_in_one_error_line_and_status_2(command, message, tmp_path):
    code, output = run_process_group([_script(command[0]), *command[1:]])
    assert code == 2, output[-2000:]
    assert output.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in output
