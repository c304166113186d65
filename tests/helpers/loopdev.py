"""Loop-device disks for root tests: attach a sparse file, always detach only our device."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from helpers.capabilities import require_loop


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True)


def detach(dev: str) -> None:
    base = os.path.basename(dev)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4]
        src = line.split(" - ")[1].split()[1] if " - " in line else ""
        if src.startswith(dev + "p"):
            _run("umount", "-l", mp)
    if any(p.startswith(base + "p") for p in os.listdir(f"/sys/class/block/{base}")):
        _run("partx", "-d", dev)
    _run("losetup", "-d", dev)


@contextlib.contextmanager
def loop_disk(path: Path, size: int, *, sector_size: int = 512) -> Iterator[str]:
    """A loop device over a sparse file of `size` bytes; detached on exit."""
    require_loop()
    with open(path, "ab") as f:
        f.truncate(size)
    argv = ["losetup", "-f", "--show"]
    if sector_size != 512:
        argv += ["--sector-size", str(sector_size)]
    proc = _run(*argv, str(path))
    assert proc.returncode == 0, proc.stderr
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        detach(dev)


def read_at(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)
