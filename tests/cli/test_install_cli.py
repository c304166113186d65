"""`install` judges its options before it looks at any disk (as upstream's parser does)."""

from __future__ import annotations

import subprocess

import pytest

from helpers.tools import NESTOS_INSTALLER


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NESTOS_INSTALLER, "install", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "a.raw.xz", "-u", "http://h/a.raw.xz"], "give only one of --image-file"),
        (["-s", "2403-LTS", "-u", "http://h/a.raw.xz"], "give only one of --image-file"),
        (["-f", "a.raw.xz", "-s", "2403-LTS"], "give only one of --image-file"),
        (["-u", "ftp://h/a.raw.xz"], "unknown protocol for URL 'ftp://h/a.raw.xz'"),
        (["--offline", "-u", "http://h/a.raw.xz"], "--offline cannot fetch an image"),
        (["-I", "gopher://h/c.ign"], "unknown protocol for URL 'gopher://h/c.ign'"),
    ],
)
@pytest.mark.parametrize("plan", [[], ["--plan"]])
def test_conflicts_are_refused_before_the_target_is_looked_at(args, message, plan):
    # the device does not exist: a check made after opening it would say so instead
    proc = install(*args, *plan, "/dev/does-not-exist")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"Error: {message}"), proc.stderr
    assert "does-not-exist" not in proc.stderr
    assert "Traceback" not in proc.stderr
