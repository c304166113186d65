"""ruff and mypy --strict run as tests (STYLE.md rule 13), exactly as a developer runs them:
bare `ruff check`, `ruff format --check` and `mypy` from the repo root, configured by
pyproject.toml alone.
"""

from __future__ import annotations

import subprocess

import pytest

from helpers.tools import BIN, REPO


def _tool(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_ruff_check_clean():
    proc = _tool("ruff", "check", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr


@pytest.mark.slow
def test_ruff_format_clean():
    proc = _tool("ruff", "format", "--check", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr


@pytest.mark.slow
def test_mypy_strict(tmp_path):
    proc = _tool("mypy", "--no-incremental", "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout
