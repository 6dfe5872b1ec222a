"""The documentation: the MkDocs site builds with --strict, and the READMEs' relative links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

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
