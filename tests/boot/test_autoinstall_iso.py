"""Live ISO autoinstall under QEMU (TCG): an `iso customize --dest-*`d live ISO boots under UEFI,
installs its offline signed image onto an empty virtio disk and reboots; the disk then boots
alone (BIOS) with the Ignition config and kargs. Each boot's wall time is printed (pytest -rP).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers.capabilities import have, require, require_qemu
from helpers.images import Artifacts, boot, demo_artifacts  # noqa: F401
from helpers.tools import NESTOS_INSTALLER
from nestos_demo.autoiso import build_autoinstall_iso
from nestos_demo.qemu import Disk

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root]

DISK_SIZE = 512 << 20
ISO_TIMEOUT = 420  # ~100 s under TCG alone; generous for boots sharing 2 cores
# a NIC without a route anywhere: the live network units find a link and DHCP at once
NIC = ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]


@pytest.fixture(scope="session")
def autoinstall_iso(demo_artifacts: Artifacts) -> Path:  # noqa: F811
    require(
        os.geteuid() == 0 and have("mmdebstrap", "cpio", "zstd"),
        "needs root, mmdebstrap, cpio and zstd to build the live rootfs",
    )
    a = demo_artifacts
    return build_autoinstall_iso(a.raw_xz, a.raw_xz_sig, a.public_key)


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _iso_customize(base: Path, dest_ignition: Path, out: Path) -> Path:
    """`iso customize --dest-device /dev/vda --dest-ignition --dest-karg-append` into `out`."""
    argv = [
        NESTOS_INSTALLER, "iso", "customize", "--dest-device", "/dev/vda",
        "--dest-ignition", str(dest_ignition), "--dest-karg-append", "nestos.test=iso-customized",
        "-o", str(out), str(base),
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return out


def test_iso_autoinstall_uefi_then_disk_boots(
    demo_artifacts: Artifacts,  # noqa: F811
    autoinstall_iso: Path,
    tmp_path: Path,
) -> None:
    """`iso customize --dest-device --dest-ignition --dest-karg-append`: UEFI CD boot installs
    the offline image unattended and reboots; the installed disk boots (BIOS) with both."""
    require_qemu()
    iso = _iso_customize(autoinstall_iso, demo_artifacts.ignition, tmp_path / "custom.iso")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)

    live = boot(
        iso,
        firmware="uefi",
        kind="cdrom",
        extra_disks=[Disk(disk, snapshot=False)],
        memory=2048,
        timeout=ISO_TIMEOUT,
        extra_args=NIC,
        serial_log=tmp_path / "live-serial.log",
    )
    print(f"UEFI live ISO autoinstall boot: {live.seconds:.1f}s")
    serial = live.serial_text
    assert not live.timed_out, f"no reboot after {live.seconds:.0f}s:\n{_tail(serial)}"
    assert "UEFI QEMU DVD-ROM" in serial, "OVMF did not boot the CD"
    # the install is driven by the embedded installer.d config alone, not by nestos.inst.* kargs
    live_cmdline = serial.split("Command line:", 1)[-1].split("\n", 1)[0]
    assert "nestos.liveiso=" in live_cmdline and "nestos.inst." not in live_cmdline
    # the live system's Ignition wrote the installer config that `iso customize` embedded
    assert 'writing file "/etc/nestos/installer.d/' in serial, _tail(serial)
    assert "nestos-installer install --config-file /etc/nestos/installer.d/" in serial
    assert "--image-file /usr/share/nestos-installer/metal/" in serial, _tail(serial)
    assert "nestos-installer: install complete." in serial, _tail(serial)
    assert "INSTALL FAILED" not in serial
    assert "reboot: Restarting system" in serial, _tail(serial)  # -no-reboot: QEMU exits
    with open(disk, "rb") as f:
        f.seek(512)
        assert f.read(8) == b"EFI PART", "no GPT on the target disk"

    result = boot(disk, firmware="bios", kind="disk", timeout=180)
    print(f"installed disk boot (BIOS): {result.seconds:.1f}s")
    assert result.ok, result.describe()
    fields = result.fields()
    assert json.loads(fields["config_ign"]) == json.loads(demo_artifacts.ignition.read_text())
    cmdline = fields["cmdline"].split()
    assert "ignition.firstboot" in cmdline, fields["cmdline"]
    assert "nestos.test=iso-customized" in cmdline, fields["cmdline"]
