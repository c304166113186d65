"""Outputs on filesystems without hard links, as users write them to USB sticks: vfat in the
kernel (published with renameat2(RENAME_NOREPLACE)) and exFAT through FUSE (no renameat2 either:
the name is claimed with O_EXCL and renamed over). Never clobbering, never leaving a temp file."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import pytest

from helpers.capabilities import require
from helpers.loopdev import loop_disk
from nestos_installer import outputs
from nestos_installer.errors import OutputExists

pytestmark = [pytest.mark.root]
MIB = 1 << 20


def kernel_has(fstype: str) -> bool:
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", fstype], check=False, capture_output=True)
    return fstype in Path("/proc/filesystems").read_text().split()


def linkless_filesystems() -> List[str]:
    """The filesystems without hard links that this machine can mount."""
    found = []
    if kernel_has("vfat") and shutil.which("mkfs.vfat"):
        found.append("vfat")
    fuse = Path("/dev/fuse").exists() and kernel_has("fuseblk")
    if fuse and shutil.which("mkfs.exfat") and shutil.which("mount.exfat-fuse"):
        found.append("exfat-fuse")
    return found


@contextmanager
def mounted(fs: str, tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"mnt-{fs}"
    mnt.mkdir()
    with loop_disk(tmp_path / f"{fs}.img", 32 * MIB) as dev:
        mkfs = "mkfs.vfat" if fs == "vfat" else "mkfs.exfat"
        subprocess.run([mkfs, dev], check=True, capture_output=True)
        mount = ["mount", dev, str(mnt)] if fs == "vfat" else ["mount.exfat-fuse", dev, str(mnt)]
        subprocess.run(mount, check=True, capture_output=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_publish_without_hard_links(tmp_path: Path) -> None:
    filesystems = linkless_filesystems()
    require(bool(filesystems), "needs vfat in the kernel, or FUSE with exfat-fuse")
    for fs in filesystems:
        with mounted(fs, tmp_path) as mnt:
            (mnt / "probe").write_bytes(b"x")
            with pytest.raises(OSError) as refused:
                os.link(mnt / "probe", mnt / "probe2")
            assert refused.value.errno == errno.EPERM, fs  # link(2) is not what publishes

            outputs.write_file(mnt / "a.img", b"data")
            assert (mnt / "a.img").read_bytes() == b"data"
            with pytest.raises(OutputExists, match="a.img already exists"):
                with outputs.new_file(mnt / "a.img") as out:
                    out.file.write(b"other")
            with pytest.raises(OutputExists):
                with outputs.new_file(mnt / "b.img") as out:
                    out.file.write(b"ours")
                    (mnt / "b.img").write_bytes(b"theirs")  # appears while we write
            assert (mnt / "a.img").read_bytes() == b"data", fs
            assert (mnt / "b.img").read_bytes() == b"theirs", fs
            names = sorted(p.name for p in mnt.iterdir())
            assert names == ["a.img", "b.img", "probe"], (fs, names)  # no temp file left
