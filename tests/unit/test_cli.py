"""The CLI without training: run directories, and every shipped config parses."""

import pytest

from avgk_lightning.cli import new_run_dir
from tests.helpers import ROOT, cli_in_process


def test_new_run_dir_never_reuses_a_directory(tmp_path):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_1").mkdir()
    assert new_run_dir(tmp_path) == tmp_path / "version_2"


@pytest.mark.parametrize("config", sorted(path.name for path in (ROOT / "configs").glob("*.yaml")))
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process(["fit", "--config", str(ROOT / "configs" / config), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: avgk_lightning" in capsys.readouterr().out
