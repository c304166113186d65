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
    proc = subprocess.run([str(BIN / "ruff"), "check", "installer", "x2nestos", "stream-metadata",
                           "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict(tmp_path):
    for link, target in (("nestos_installer", "installer"), ("nestos_stream", "stream-metadata"),
                         ("x2nestos", "x2nestos")):
        (tmp_path / link).symlink_to(ROOT / target)
    (tmp_path / "none.ini").write_text("[mypy]\n")
    proc = subprocess.run(
        [str(BIN / "mypy"), "--strict", "--ignore-missing-imports", "--no-incremental",
         "--config-file", str(tmp_path / "none.ini"),
         "-p", "nestos_installer", "-p", "nestos_stream", "-p", "x2nestos"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
