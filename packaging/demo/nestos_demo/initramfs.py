"""Busybox initramfs images for the demo guests, written as newc cpio by Python (no root needed).

An `Initramfs` is a list of members; `metal_initramfs` / `live_initramfs` fill it with busybox,
the kernel modules the guests need, and the /init script from guest/. `nestos_installer.cpio`
writes the archive.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import stat
import struct
from pathlib import Path
from typing import List, Mapping, Optional

from nestos_demo.kernel import Kernel
from nestos_demo.util import BuildError
from nestos_installer import cpio

GUEST_DIR = Path(__file__).resolve().parent / "guest"
BUSYBOX = Path("/bin/busybox")

# virtio disks + ext4/vfat/iso9660 + SATA/IDE CD-ROMs (the ISO boots on ide-cd / AHCI)
MODULES = (
    "virtio_pci virtio_blk virtio_scsi ext4 vfat nls_cp437 nls_iso8859_1 sd_mod sr_mod "
    "ahci ata_piix isofs loop"
).split()


def newc_archive(members: List[cpio.Entry]) -> bytes:
    """An uncompressed newc archive of `members` (in the given order, inodes numbered from 1)
    plus the trailer."""
    numbered = [dataclasses.replace(m, ino=i + 1) for i, m in enumerate(members)]
    return cpio.write(numbered)


@dataclasses.dataclass
class Initramfs:
    """The member list of one initramfs; directories are added for every file's parents."""

    members: List[cpio.Entry] = dataclasses.field(default_factory=list)
    _dirs: List[str] = dataclasses.field(default_factory=list)

    def mkdir(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self._dirs:
                self._dirs.append(d)
                self.members.append(cpio.Entry(d, stat.S_IFDIR | 0o755))

    def add(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        if "/" in path:
            self.mkdir(path.rsplit("/", 1)[0])
        self.members.append(cpio.Entry(path, stat.S_IFREG | mode, data))

    def node(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.members.append(cpio.Entry(path.strip("/"), stat.S_IFCHR | mode, rdev=(major, minor)))

    def gzip(self) -> bytes:
        return gzip.compress(newc_archive(self.members), compresslevel=6, mtime=0)


def _has_interpreter(elf: bytes) -> bool:
    """True for a dynamically linked ELF64 (a PT_INTERP program header)."""
    if elf[:5] != b"\x7fELF\x02":
        raise BuildError("/bin/busybox is not a 64-bit ELF executable")
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def busybox_base(
    kernel: Kernel, init_script: Path, modules: Optional[List[str]] = None
) -> Initramfs:
    """busybox + modules (loaded by /init from lib/modules/load.order) + /init + /dev nodes."""
    if not BUSYBOX.exists():
        raise BuildError("/bin/busybox not found (apt: busybox-static)")
    bb = BUSYBOX.read_bytes()
    if _has_interpreter(bb):
        raise BuildError("/bin/busybox is not statically linked (apt: busybox-static)")
    ir = Initramfs()
    for d in ("bin", "sbin", "dev", "proc", "sys", "mnt", "run", "tmp", "etc", "lib/modules"):
        ir.mkdir(d)
    ir.add("bin/busybox", bb, 0o755)
    order = []
    for ko in kernel.module_files(modules if modules is not None else MODULES):
        ir.add(f"lib/modules/{ko.name}", ko.read_bytes())
        order.append(ko.name)
    ir.add("lib/modules/load.order", ("\n".join(order) + "\n").encode())
    ir.add("init", init_script.read_bytes(), 0o755)
    ir.node("dev/console", 5, 1)
    ir.node("dev/null", 1, 3, 0o666)
    return ir


def metal_initramfs(kernel: Kernel) -> bytes:
    """The installed system's initramfs: prints /boot state between the demo markers."""
    return busybox_base(kernel, GUEST_DIR / "metal-init.sh").gzip()


def live_initramfs(kernel: Kernel, features: Mapping[str, object]) -> bytes:
    """The live ISO/PXE initramfs, stamped as a NestOS live initramfs with its features.json."""
    ir = busybox_base(kernel, GUEST_DIR / "live-init.sh")
    ir.add("etc/nestos-live-initramfs", b"")
    ir.add("etc/nestos/features.json", (json.dumps(features, indent=2) + "\n").encode())
    return ir.gzip()
