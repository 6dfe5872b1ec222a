"""The documentation: the MkDocs site builds with --strict, and the READMEs' relative links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

# [text](target) with a relative target: not a URL, not a bare #anchor.
_LINK = re.compile(r"\[[^\]]*\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def test_mkdocs_site_builds_strictly(tmp_path):
    # Any warning (a broken link or anchor, a page missing from the nav, a docstring griffe cannot parse)
    # fails a --strict build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("readme", ["README.md", "benchmarks/README.md"])
def test_readme_relative_links_point_at_files(readme):
    path = ROOT / readme
    targets = _LINK.findall(path.read_text(encoding="utf-8"))
    assert targets, f"{readme} has no relative links"
    missing = [target for target in targets if not (path.parent / target.split("#", 1)[0]).exists()]
    assert not missing, f"{readme} links to missing files: {missing}"


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's example, on a smaller embedded data set and one epoch: it trains, tests and predicts sets."""
    readme = (ROOT / "README.md").read_text()
    code = next(block for block in readme.split("```python")[1:] if "predict_sets" in block).split("```")[0]
    small = "SyntheticAmbiguityDataModule(train_size=256, val_size=128, test_size=128)"
    assert "SyntheticAmbiguityDataModule()" in code and "max_epochs=12" in code
    code = code.replace("SyntheticAmbiguityDataModule()", small).replace("max_epochs=12", "max_epochs=1")
    code = code.replace("logger=False", f"logger=False, enable_progress_bar=False, default_root_dir={str(tmp_path)!r}")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - runs the README's own example
    model, images = namespace["model"], namespace["images"]
    sets = model.predict_sets(images[:4], k=2)
    threshold = model.calibrated_threshold(2)
    assert len(sets) == 4 and all(isinstance(index, int) for members in sets for index in members)
    accuracy = model.calibration.accuracy  # predict_head: validation, the default, takes the better head
    head = max(("multilabel", "softmax"), key=lambda name: (accuracy[name][2.0], name == "multilabel"))
    with torch.no_grad():  # the same scores, in evaluation mode, as predict_sets reads them
        scores = model.eval().network.scores(images[:4], [head])[head]
    assert [sorted(members) for members in sets] == [
        sorted((row >= threshold).nonzero().flatten().tolist()) for row in scores
    ]
