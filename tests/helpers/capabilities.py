"""Capability probes that decide whether a test can run here (never uid checks alone)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest


def require(ok: bool, reason: str) -> None:
    """Skip (or, under NESTOS_TEST_STRICT=1, fail through conftest) when `ok` is false."""
    if not ok:
        pytest.skip(reason)


@functools.cache
def can_loop() -> bool:
    """Root and a working loop-device driver (losetup can attach a file)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return False
    return os.path.exists("/dev/loop-control")


@functools.cache
def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None and os.path.exists(
        "/usr/share/OVMF/OVMF_CODE_4M.fd"
    )


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def require_loop() -> None:
    require(can_loop(), "needs root and loop devices (/dev/loop-control, losetup)")


def require_qemu() -> None:
    require(have_qemu(), "needs qemu-system-x86_64 and OVMF (apt: qemu-system-x86 ovmf)")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    require(not missing, f"needs {', '.join(missing)} on PATH")


def gpg_version() -> str:
    return subprocess.run(
        ["gpg", "--version"], check=False, capture_output=True, text=True
    ).stdout.split("\n")[0]
