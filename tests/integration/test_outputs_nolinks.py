"""Outputs on a filesystem without hard links (vfat on a loop device): published with
renameat2(RENAME_NOREPLACE), still never clobbering, never leaving a temp file."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.capabilities import require, require_tools
from helpers.loopdev import loop_disk
from nestos_installer import outputs
from nestos_installer.errors import OutputExists

pytestmark = [pytest.mark.root]
MIB = 1 << 20


def kernel_has(fstype: str) -> bool:
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", fstype], check=False, capture_output=True)
    known = Path("/proc/filesystems").read_text().split()
    return fstype in known


def test_publish_without_hard_links(tmp_path: Path) -> None:
    require_tools("mkfs.vfat", "mount", "umount")
    require(kernel_has("vfat"), "needs a kernel that mounts vfat (no hard links there)")
    with loop_disk(tmp_path / "fat.img", 32 * MIB) as dev:
        subprocess.run(["mkfs.vfat", dev], check=True, capture_output=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", dev, str(mnt)], check=True)
        try:
            (mnt / "probe").write_bytes(b"x")
            with pytest.raises(OSError) as refused:
                os.link(mnt / "probe", mnt / "probe2")
            assert refused.value.errno == errno.EPERM  # so link(2) is not what publishes

            outputs.write_file(mnt / "a.img", b"data")
            assert (mnt / "a.img").read_bytes() == b"data"
            with pytest.raises(OutputExists, match="a.img already exists"):
                with outputs.new_file(mnt / "a.img") as out:
                    out.file.write(b"other")
            with pytest.raises(OutputExists):
                with outputs.new_file(mnt / "b.img") as out:
                    out.file.write(b"ours")
                    (mnt / "b.img").write_bytes(b"theirs")  # appears while we write
            assert (mnt / "a.img").read_bytes() == b"data"
            assert (mnt / "b.img").read_bytes() == b"theirs"
            names = sorted(p.name for p in mnt.iterdir())
            assert names == ["a.img", "b.img", "probe"]
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
