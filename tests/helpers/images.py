"""Session fixtures for the demo artifacts (`demo_artifacts`: busybox metal image, 4Kn image, live
ISO, PXE, key, Ignition) and the first-boot image (`os_image`), built once into the cache.
"""

# Use in a test module with `from helpers.images import demo_artifacts` (noqa F401) (or via
# `pytest_plugins`). The build lands in ${XDG_CACHE_HOME:-~/.cache}/nestos-installer/demo/<input
# hash>: built once, then reused by every pytest-xdist worker and later run (a file lock
# serialises concurrent builders). Treat the files as read-only: copy them before modifying
# (boots use snapshot=on). For a stream pointing at your own server, call
# `demo_artifacts.write_stream(base_url, dest=tmp_path / "demo.json")`.

from __future__ import annotations

import os
from typing import Iterator

import pytest

from helpers.capabilities import have, require, require_tools
from nestos_demo.build import Artifacts, build
from nestos_demo.osimage import OsImage, build_os_image
from nestos_demo.qemu import BootResult, boot, parse_markers

__all__ = [
    "Artifacts",
    "BootResult",
    "OsImage",
    "boot",
    "demo_artifacts",
    "os_image",
    "parse_markers",
    "BUILD_TOOLS",
]

# what the demo builder runs (apt: busybox-static grub-pc-bin grub-efi-amd64-bin mtools
# dosfstools e2fsprogs xfsprogs xorriso squashfs-tools gnupg xz-utils kmod)
BUILD_TOOLS = (
    "apt-get", "apt-cache", "dpkg-deb", "depmod", "modprobe", "busybox", "grub-mkimage",
    "mkfs.vfat", "mmd", "mcopy", "mke2fs", "mkfs.xfs", "xorriso", "mksquashfs", "gpg", "xz",
)  # fmt: skip


@pytest.fixture(scope="session")
def demo_artifacts() -> Iterator[Artifacts]:
    """All demo artifacts, built (or taken from the cache) once per session."""
    require_tools(*BUILD_TOOLS)
    yield build()


@pytest.fixture(scope="session")
def os_image() -> Iterator[OsImage]:
    """The first-boot image (Debian, Ignition, NetworkManager, sshd): built once (a few
    minutes, root) into the cache, then shared by every worker and later run."""
    require(
        os.geteuid() == 0 and have("mmdebstrap", "chroot", "unshare", "mount", "zstd"),
        "needs root, mmdebstrap, unshare and zstd to build the first-boot image",
    )
    require_tools(*BUILD_TOOLS)
    yield build_os_image()
