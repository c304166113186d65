"""Session fixtures for the demo artifacts (metal image, 4Kn image, live ISO, PXE, key, Ignition).

Use in a test module with `from helpers.images import demo_artifacts  # noqa: F401` (or via
`pytest_plugins`). The build lands in ${XDG_CACHE_HOME:-~/.cache}/nestos-installer/demo/<input
hash>: built once, then reused by every pytest-xdist worker and later run (a file lock serialises
concurrent builders). Treat the files as read-only: copy them before modifying (boots use
snapshot=on). For a stream pointing at your own server, call
`demo_artifacts.write_stream(base_url, dest=tmp_path / "demo.json")`.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from helpers.capabilities import require_tools
from nestos_demo.build import Artifacts, build
from nestos_demo.qemu import BootResult, boot, parse_markers

__all__ = ["Artifacts", "BootResult", "boot", "demo_artifacts", "parse_markers", "BUILD_TOOLS"]

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
