"""Shared fixture of the packaging tests: one run of packaging/build.sh (wheel, sdist, man
pages, completions, zipapp, .deb and .rpm) per test session, in a temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.capabilities import require_tools

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output directory of `packaging/build.sh --deb --rpm`."""
    require_tools("dpkg-buildpackage", "dh", "rpmbuild", "man")
    out = tmp_path_factory.mktemp("pkgbuild")
    env = dict(os.environ, PYTHON=sys.executable, SOURCE_DATE_EPOCH="1700000000")
    proc = subprocess.run(
        [str(REPO / "packaging" / "build.sh"), "-o", str(out), "--deb", "--rpm"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
