"""benchmarks/compare.py end to end on a tiny setting: 2 methods, 1 seed, 1 epoch; its tables are consistent."""

from __future__ import annotations

import re
import sys

import pytest

from tests.helpers import run_process_group

TINY = [
    "--set=data.init_args.train_size=300",
    "--set=data.init_args.val_size=100",
    "--set=data.init_args.test_size=101",
]


def _table(report: str, title: str) -> dict[str, list[str]]:
    """Rows of the Markdown table that follows the bold `title`: first cell -> other cells."""
    block = report.split(f"**{title}**", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")][2:]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


@pytest.mark.slow
def test_compare_writes_its_tables_end_to_end(tmp_path):
    out = tmp_path / "results" / "table.md"
    command = [sys.executable, "benchmarks/compare.py", "--methods=two_head,softmax", "--seeds=1", "--max-epochs=1"]
    code, output = run_process_group([*command, *TINY, f"--out={out}"], timeout=300)
    assert code == 0, output[-4000:]
    report = out.read_text()
    assert report.startswith("Command: `python benchmarks/compare.py --methods=two_head,softmax")
    accuracy = _table(report, "Test average-K accuracy")
    assert set(accuracy) == {"two_head", "two_head (its softmax head)", "softmax", "Bayes oracle"}
    for row in accuracy.values():
        assert len(row) == 5 and all(0 <= float(cell) <= 1 for cell in row)  # K = 1, 2, 3, 5, 10
    set_size = _table(report, "Test mean set size")
    assert all(abs(float(size) - k) < 0.5 * k + 0.5 for size, k in zip(set_size["softmax"], [1, 2, 3, 5, 10]))
    paired = report.split("**Paired difference two_head - softmax**", 1)[1]
    for k_index, line in enumerate(re.findall(r"^\| (?:1|2|3|5|10) \|.*$", paired, flags=re.MULTILINE)):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        difference = float(accuracy["two_head"][k_index]) - float(accuracy["softmax"][k_index])
        assert float(cells[1]) == pytest.approx(difference, abs=1.5e-4)  # the per-seed difference of the rows
        assert cells[-1] == (
            "1 / 0 / 0" if difference >= 0.0005 else "0 / 0 / 1" if difference <= -0.0005 else "0 / 1 / 0"
        )


def test_compare_refuses_to_overwrite_and_unknown_methods(tmp_path):
    existing = tmp_path / "table.md"
    existing.write_text("mine")
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", f"--out={existing}"], timeout=120)
    assert code == 2 and "exists: pass a new file name" in output and existing.read_text() == "mine"
    code, output = run_process_group([sys.executable, "benchmarks/compare.py", "--methods=two_head,nope"], timeout=120)
    assert code == 2 and "unknown method(s) nope (argument --methods)" in output
