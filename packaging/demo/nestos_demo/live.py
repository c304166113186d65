"""The demo live ISO and PXE files, in the NestOS live-media layout (installer.md §5.2-§5.7).

The live initramfs and rootfs come in as a `LivePayload`, so a richer live environment (e.g. a
systemd rootfs for autoinstall) can replace the busybox one without touching the ISO layout.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from nestos_demo import grub
from nestos_demo.initramfs import newc_archive
from nestos_demo.util import BuildError, run
from nestos_installer import cpio

IGNITION_AREA = 256 * 1024
KARGS_AREA = 1024
VENDOR = "openEuler"
KARGS_FILES = (f"EFI/{VENDOR}/grub.cfg", "boot/grub/grub.cfg")
MARKER = "# NESTOS_KARG_EMBED_AREA"

# installer config keys the live installer understands (as in example-config.yaml)
INSTALLER_CONFIG_KEYS = (
    "image-file image-url stream architecture platform console append-karg delete-karg "
    "ignition-file ignition-url ignition-hash firstboot-args save-partlabel save-partindex "
    "copy-network network-dir offline insecure insecure-ignition stream-base-url "
    "preserve-on-error fetch-retries secure-ipl dest-device"
).split()


def features() -> Dict[str, object]:
    """features.json of the demo live media: every customize feature is supported."""
    return {
        "installer-config": True,
        "installer-config-directives": {k: True for k in INSTALLER_CONFIG_KEYS},
        "live-initrd-network": True,
    }


@dataclass(frozen=True)
class LivePayload:
    """What the live media boot: a kernel, its initramfs and the rootfs.img (cpio) beside it.

    The initramfs must carry etc/nestos-live-initramfs and etc/nestos/features.json.
    """

    kernel: Path
    initramfs: Path
    rootfs: Path


def live_kargs(volume_id: str) -> str:
    return (
        f"console=ttyS0,115200n8 panic=1 nestos.liveiso={volume_id} ignition.firstboot "
        "ignition.platform.id=metal"
    )


def kargs_area(kargs: str) -> str:
    """The embed area: kargs, newline, '#' padding to KARGS_AREA bytes (a GRUB comment)."""
    if len(kargs) + 1 >= KARGS_AREA:
        raise BuildError(f"default kargs longer than the {KARGS_AREA}-byte area")
    return kargs + "\n" + "#" * (KARGS_AREA - len(kargs) - 1)


def grub_cfg(kargs: str) -> tuple[str, int]:
    """The live grub.cfg and the byte offset of its kargs area."""
    head = (
        "# grub.cfg of the NestOS demo live media\n"
        "set timeout=0\n"
        "serial --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "menuentry 'NestOS demo (Live)' --class gnu-linux --class os {\n"
        "\tlinux /images/pxeboot/vmlinuz "
    )
    tail = f"{MARKER}\n\tinitrd /images/pxeboot/initrd.img /images/ignition.img\n}}\n"
    return head + kargs_area(kargs) + tail, len(head.encode())


def make_rootfs(out: Path) -> None:
    """rootfs.img: an uncompressed newc cpio holding root.squashfs (data at offset 124)."""
    if shutil.which("mksquashfs") is None:
        raise BuildError("mksquashfs not found, needed for the live rootfs (apt: squashfs-tools)")
    with tempfile.TemporaryDirectory(prefix="nestos-demo-rootfs-") as tmp:
        tree = Path(tmp) / "tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "os-release").write_text('NAME="NestOS demo"\nID=nestos\n')
        sq = Path(tmp) / "root.squashfs"
        run(
            [
                "mksquashfs",
                tree,
                sq,
                "-quiet",
                "-no-progress",
                "-noappend",
                "-all-root",
                "-mkfs-time",
                "0",
                "-all-time",
                "0",
            ]
        )
        data = sq.read_bytes()
    out.write_bytes(newc_archive([cpio.Entry("root.squashfs", 0o100644, data)]))


def _efiboot(path: Path, efi_binary: Path) -> None:
    run(["mkfs.vfat", "-C", "-n", "EFIBOOT", path, "4096"])
    run(["mmd", "-i", path, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", path, efi_binary, "::/EFI/BOOT/BOOTX64.EFI"])


def build_iso(out: Path, payload: LivePayload, volume_id: str) -> None:
    """Write the live ISO (BIOS GRUB El Torito + UEFI, hybrid) to `out`."""
    kargs = live_kargs(volume_id)
    with tempfile.TemporaryDirectory(prefix="nestos-demo-iso-") as tmp:
        w = Path(tmp)
        root = w / "isoroot"
        pxe = root / "images" / "pxeboot"
        pxe.mkdir(parents=True)
        shutil.copy(payload.kernel, pxe / "vmlinuz")
        shutil.copy(payload.initramfs, pxe / "initrd.img")
        shutil.copy(payload.rootfs, pxe / "rootfs.img")
        _embed_areas(root, kargs)
        find = "search --no-floppy --file /nestos/igninfo.json --set root\n"
        efi = grub.mkimage(
            "x86_64-efi",
            w / "grubx64.efi",
            find + f"set prefix=($root)/EFI/{VENDOR}\n",
            f"/EFI/{VENDOR}",
            grub.ISO_CORE_MODS,
        )
        _efiboot(root / "images" / "efiboot.img", efi)
        grub.mkimage(
            "i386-pc-eltorito",
            root / "boot" / "grub" / "eltorito.img",
            find + "set prefix=($root)/boot/grub\n",
            "/boot/grub",
            ["biosdisk", *grub.ISO_CORE_MODS],
        )
        tmp_out = out.with_name(f".{out.name}.tmp")
        _xorriso(root, tmp_out, volume_id)
        os.replace(tmp_out, out)


def _embed_areas(root: Path, kargs: str) -> None:
    """The Ignition area file, the GRUB configs holding the kargs area, and nestos/*.json."""
    (root / "images" / "ignition.img").write_bytes(b"\0" * IGNITION_AREA)
    files: List[Dict[str, object]] = []
    for rel in KARGS_FILES:
        text, offset = grub_cfg(kargs)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        files.append({"path": rel, "offset": offset, "pad": "#", "end": "\n"})
    meta = root / "nestos"
    meta.mkdir()
    (meta / "igninfo.json").write_text(json.dumps({"file": "images/ignition.img"}) + "\n")
    (meta / "kargs.json").write_text(
        json.dumps({"default": kargs, "files": files, "size": KARGS_AREA}, indent=2) + "\n"
    )
    (meta / "features.json").write_text(json.dumps(features(), indent=2) + "\n")


def _xorriso(root: Path, tmp_out: Path, volume_id: str) -> None:
    """The hybrid ISO of `root`: BIOS GRUB El Torito, UEFI efiboot.img, GPT for USB sticks."""
    run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            tmp_out,
            "-V",
            volume_id,
            "-R",
            "-J",
            "-b",
            "boot/grub/eltorito.img",
            "-c",
            "boot/grub/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
            grub.GRUB_LIB / "i386-pc" / "boot_hybrid.img",
            "-eltorito-alt-boot",
            "-e",
            "images/efiboot.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
            root,
        ]
    )
