"""ruff and mypy --strict run as tests over the three packages (STYLE.md rule 13).

mypy gets a symlink tree with the import names (installer/ is nestos_installer,
stream-metadata/ is nestos_stream), which the directory names themselves can't provide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_ruff_clean():
    proc = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "--extend-ignore",
                           "I001", "installer", "x2nestos",
                           "stream-metadata", "benchmarks"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict(tmp_path):
    proc = subprocess.run([str(BIN / "mypy"), "--no-incremental", "--cache-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
