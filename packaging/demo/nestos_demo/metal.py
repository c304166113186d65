"""The demo metal disk image: GPT BIOS-BOOT / EFI-SYSTEM / boot (ext4) / root (xfs), no root needed.

Each filesystem is made as its own file (mkfs.vfat + mtools, mke2fs -d, mkfs.xfs) and copied
sparsely into a file partitioned with sfdisk; GRUB goes into the MBR + BIOS-BOOT and the ESP.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nestos_demo import gpt, grub
from nestos_demo.kernel import Kernel
from nestos_demo.util import BuildError, run

MiB = 1 << 20
ESP_MIB = 8
BOOT_MIB = 32
ROOT_MIB = 20

TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TYPE_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
# Like FCOS/NestOS images: a fixed disk GUID that first boot randomises.
DISK_GUID = "00000000-0000-4000-A000-000000000001"

KARGS = (
    "root=LABEL=root rw console=ttyS0,115200n8 panic=1 ignition.platform.id=metal "
    "$ignition_firstboot"
)

SERIAL_GRUB = list(grub.DISK_CONSOLE)
# Shape of FCOS's /boot/coreos/platforms.json; `metal` matches the image's defaults.
PLATFORMS: Dict[str, Dict[str, List[str]]] = {
    "aliyun": {"grub_commands": SERIAL_GRUB, "kernel_arguments": ["console=ttyS0,115200n8"]},
    "aws": {"grub_commands": SERIAL_GRUB, "kernel_arguments": ["console=ttyS0,115200n8"]},
    "metal": {"grub_commands": SERIAL_GRUB, "kernel_arguments": ["console=ttyS0,115200n8"]},
    "openstack": {
        "grub_commands": SERIAL_GRUB,
        "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"],
    },
    "qemu": {"grub_commands": SERIAL_GRUB, "kernel_arguments": ["console=ttyS0,115200n8"]},
    "vmware": {
        "grub_commands": ["terminal_input console", "terminal_output console"],
        "kernel_arguments": ["console=tty0"],
    },
}


@dataclass(frozen=True)
class Part:
    """One partition: number, GPT name, type GUID, start and size in MiB, filesystem file."""

    number: int
    name: str
    type_guid: str
    start_mib: int
    size_mib: int
    image: Path


def bls_entry(version: str, kernel_path: str, initrd_path: str) -> str:
    """The BLS entry in the FCOS/NestOS format (the `options` line is what installers edit)."""
    return (
        f"title NestOS demo {version} (ostree:0)\n"
        "version 1\n"
        f"options {KARGS}\n"
        f"linux {kernel_path}\n"
        f"initrd {initrd_path}\n"
    )


def stage_bootfs(staging: Path, kernel: Kernel, initramfs: bytes, version: str) -> None:
    """Fill the `boot` filesystem's staging directory."""
    osdir = f"ostree/nestos-demo-{version}"
    (staging / osdir).mkdir(parents=True)
    shutil.copy(kernel.vmlinuz, staging / osdir / f"vmlinuz-{kernel.version}")
    (staging / osdir / f"initramfs-{kernel.version}.img").write_bytes(initramfs)
    entries = staging / "loader" / "entries"
    entries.mkdir(parents=True)
    (entries / "ostree-1-nestos.conf").write_text(
        bls_entry(
            version,
            f"/{osdir}/vmlinuz-{kernel.version}",
            f"/{osdir}/initramfs-{kernel.version}.img",
        )
    )
    (staging / "ignition.firstboot").write_bytes(b"")
    (staging / "nestos").mkdir()
    (staging / "nestos" / "platforms.json").write_text(json.dumps(PLATFORMS, indent=2) + "\n")
    grub.stage_disk_grub(staging / "grub2")


def make_esp(path: Path, efi_binary: Path, sector: int) -> None:
    size_kib = ESP_MIB * 1024
    run(["mkfs.vfat", "-C", "-S", str(sector), "-n", "EFI-SYSTEM", path, str(size_kib)])
    run(["mmd", "-i", path, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", path, efi_binary, "::/EFI/BOOT/BOOTX64.EFI"])


def make_bootfs(path: Path, staging: Path, size_mib: int = BOOT_MIB) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    # -b 4096: firmware ext4 readers choke on the holey extent trees 1 KiB blocks give.
    run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-b",
            "4096",
            "-t",
            "ext4",
            "-L",
            "boot",
            "-E",
            "root_owner=0:0",
            "-d",
            staging,
            path,
        ]
    )


def make_rootfs(path: Path, sector: int) -> None:
    with open(path, "wb") as f:
        f.truncate(ROOT_MIB * MiB)
    # mkfs.xfs >= 5.19 refuses filesystems < 300 MB unless the fstests overrides are set.
    env = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
    run(["mkfs.xfs", "-q", "-f", "-s", f"size={sector}", "-L", "root", path], env=env)


def copy_sparse(src: Path, dst: Path, offset: int) -> None:
    """Copy src into dst at offset, leaving all-zero MiB chunks as holes (dst starts sparse)."""
    with open(src, "rb") as fi, open(dst, "r+b") as fo:
        pos = offset
        while True:
            chunk = fi.read(MiB)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                fo.seek(pos)
                fo.write(chunk)
            pos += len(chunk)


def partition(disk: Path, parts: List[Part], sector: int) -> None:
    per_mib = MiB // sector
    entries = [
        gpt.Entry(
            p.number,
            p.type_guid,
            p.start_mib * per_mib,
            (p.start_mib + p.size_mib) * per_mib - 1,
            p.name,
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"nestos-demo/{sector}/{p.name}")),
        )
        for p in parts
    ]
    gpt.write_gpt(disk, sector, DISK_GUID, entries)


def build_disk(
    out: Path,
    kernel: Kernel,
    initramfs: bytes,
    version: str,
    sector: int,
    *,
    root_image: Optional[Path] = None,
    boot_mib: int = BOOT_MIB,
) -> None:
    """Write the disk image `out` (sparse) with `sector`-byte logical sectors (512 or 4096).

    `root_image`: a ready filesystem (label `root`) for p4 instead of the empty 20 MiB xfs.
    """
    if sector not in (512, 4096):
        raise BuildError(f"unsupported sector size {sector}")
    with tempfile.TemporaryDirectory(prefix="nestos-demo-metal-") as tmp:
        w = Path(tmp)
        staging = w / "bootfs"
        stage_bootfs(staging, kernel, initramfs, version)
        efi = grub.mkimage(
            "x86_64-efi", w / "grubx64.efi", grub.DISK_EARLY_CFG, "/grub2", grub.DISK_CORE_MODS
        )
        make_esp(w / "esp.img", efi, sector)
        make_bootfs(w / "boot.img", staging, boot_mib)
        if root_image is None:
            root_image = w / "root.img"
            make_rootfs(root_image, sector)
        root_mib = -(-root_image.stat().st_size // MiB)
        parts = [
            Part(1, "BIOS-BOOT", TYPE_BIOS_BOOT, 1, 1, w / "none"),
            Part(2, "EFI-SYSTEM", TYPE_ESP, 2, ESP_MIB, w / "esp.img"),
            Part(3, "boot", TYPE_LINUX, 2 + ESP_MIB, boot_mib, w / "boot.img"),
            Part(4, "root", TYPE_LINUX, 2 + ESP_MIB + boot_mib, root_mib, root_image),
        ]
        tmp_out = out.with_name(f".{out.name}.tmp")
        with open(tmp_out, "wb") as f:
            f.truncate((2 + ESP_MIB + boot_mib + root_mib + 1) * MiB)
        partition(tmp_out, parts, sector)
        for p in parts[1:]:
            copy_sparse(p.image, tmp_out, p.start_mib * MiB)
        if sector == 512:
            core = grub.mkimage(
                "i386-pc",
                w / "core.img",
                grub.DISK_EARLY_CFG,
                "/grub2",
                ["biosdisk", *grub.DISK_CORE_MODS],
            )
            grub.install_bios(tmp_out, MiB // sector, core)
        os.replace(tmp_out, out)
