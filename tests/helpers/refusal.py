"""Running `nestos-installer` on input it must refuse: a timeout, a memory cap, and the shape of
a refusal (non-zero exit but not 70, one `Error:` line, no traceback, no "internal error")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

from helpers.tools import NESTOS_INSTALLER

TIMEOUT = 20
"""A correct refusal takes about a second; a hang is what this catches."""
MEMORY_CAP_KIB = 2 << 20
"""Address space of each run: an input read whole without a bound fails here, not the machine."""
ALLOWED = re.compile(r"^(|Caused by:|    .*|hint: .*|Usage: .*|Try '.*' for help\.)$")
"""Lines a refusal may print beside its `Error:` line (causes, hint, click's usage lines)."""


def check_refusal(proc: subprocess.CompletedProcess, argv: List[str]) -> None:  # type: ignore[type-arg]
    err = proc.stderr.decode("utf-8", "backslashreplace")
    where = f"{' '.join(argv)}\n{err}"
    assert proc.returncode not in (0, 70) and proc.returncode > 0, where
    assert "Traceback" not in err and "internal error" not in err, where
    lines = err.splitlines()
    assert len([ln for ln in lines if ln.startswith("Error:")]) == 1, where
    assert all(ln.startswith("Error:") or ALLOWED.match(ln) for ln in lines), where


def run(
    argv: List[str], cwd: Optional[Path] = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    capped = ["sh", "-c", f'ulimit -v {MEMORY_CAP_KIB} && exec "$0" "$@"', NESTOS_INSTALLER]
    try:
        return subprocess.run(
            [*capped, *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s: {' '.join(argv)}")
