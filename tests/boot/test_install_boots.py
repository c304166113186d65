"""Disks written by `nestos-installer install` boot under QEMU (TCG) with BIOS and UEFI, and
the guest prints what the installer embedded (serial console)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.capabilities import require_qemu
from helpers.images import boot, demo_artifacts  # noqa: F401
from helpers.loopdev import loop_disk

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]
MIB = 1 << 20


def install(dev: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nestos_installer", "install", *args, dev],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_disk_boots_bios(demo_artifacts, tmp_path):  # noqa: F811
    require_qemu()
    a = demo_artifacts
    disk = tmp_path / "disk.img"
    with loop_disk(disk, 256 * MIB) as dev:
        proc = install(
            dev,
            "-f",
            str(a.raw_xz),
            "--keyring",
            str(a.public_key),
            "-i",
            str(a.ignition),
            "--append-karg",
            "nestos.boottest=bios",
        )
        assert proc.returncode == 0, proc.stderr
    r = boot(disk, firmware="bios", timeout=240)
    assert "CMDLINE:" in r.markers, r.serial_text[-3000:]
    cmdline = next(ln for ln in r.markers.splitlines() if ln.startswith("CMDLINE:"))
    assert "nestos.boottest=bios" in cmdline
    assert "ignition.firstboot" in cmdline
    assert a.ignition.read_text().strip() in r.markers
    assert "CONFIG-IGN-MODE: 600 dir 700" in r.markers


def test_installed_disk_with_options_boots_uefi(demo_artifacts, tmp_path):  # noqa: F811
    require_qemu()
    a = demo_artifacts
    netdir = tmp_path / "nm"
    netdir.mkdir()
    (netdir / "eth0.nmconnection").write_text("[connection]\nid=eth0\ntype=ethernet\n")
    disk = tmp_path / "disk.img"
    with loop_disk(disk, 256 * MIB) as dev:
        proc = install(
            dev,
            "-f",
            str(a.raw_xz),
            "--keyring",
            str(a.public_key),
            "-i",
            str(a.ignition),
            "--append-karg",
            "nestos.boottest=uefi",
            "--platform",
            "qemu",
            "--console",
            "tty0",
            "--console",
            "ttyS0,115200n8",
            "--firstboot-args",
            "rd.neednet=1 ip=dhcp",
            "--copy-network",
            "--network-dir",
            str(netdir),
        )
        assert proc.returncode == 0, proc.stderr
        assert "Setting platform to qemu" in proc.stderr
    r = boot(disk, firmware="uefi", timeout=240)
    assert "CMDLINE:" in r.markers, r.serial_text[-3000:]
    cmdline = next(ln for ln in r.markers.splitlines() if ln.startswith("CMDLINE:"))
    assert "nestos.boottest=uefi" in cmdline
    assert "ignition.platform.id=qemu" in cmdline and "platform.id=metal" not in cmdline
    assert "console=tty0 console=ttyS0,115200n8" in cmdline
    # GRUB sourced ignition.firstboot: the first-boot args reach the kernel
    assert "ignition.firstboot rd.neednet=1 ip=dhcp" in cmdline
    assert "serial --unit=0 --speed=115200 --word=8 --parity=no" in r.markers
    assert "terminal_input console serial" in r.markers
    assert "eth0.nmconnection" in r.markers
    assert a.ignition.read_text().strip() in r.markers
