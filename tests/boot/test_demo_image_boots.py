"""The pristine demo media boot under QEMU (TCG): metal image and live ISO with BIOS and UEFI,
and the PXE kernel + initramfs + rootfs; each guest prints what it found on the serial console.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from helpers.capabilities import require_loop, require_qemu
from helpers.images import Artifacts, boot, demo_artifacts, parse_markers  # noqa: F401

pytestmark = [pytest.mark.vm, pytest.mark.slow]

FIRMWARES = ["bios", "uefi"]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_metal_image_boots_first_boot(demo_artifacts: Artifacts, firmware: str) -> None:  # noqa: F811
    require_qemu()
    result = boot(demo_artifacts.raw, firmware=firmware, kind="disk", timeout=180)
    assert result.ok, result.describe()
    f = result.fields()
    cmdline = f["cmdline"].split()
    # GRUB sourced the empty /ignition.firstboot and expanded $ignition_firstboot
    assert "ignition.firstboot" in cmdline
    assert "$ignition_firstboot" not in f["cmdline"]
    assert "ignition.platform.id=metal" in cmdline
    assert "root=LABEL=root" in cmdline
    assert f["firstboot"] == "present, content: []"
    assert f["bls_options"].endswith("ignition.platform.id=metal $ignition_firstboot")
    assert "config_ign" not in f  # a pristine image carries no Ignition config
    assert f["network_files"] == "absent"
    assert "metal" in f["platforms"].split() and "qemu" in f["platforms"].split()
    assert f["grub_console"].startswith("serial --speed=115200")


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_live_iso_boots(demo_artifacts: Artifacts, firmware: str) -> None:  # noqa: F811
    require_qemu()
    result = boot(demo_artifacts.iso, firmware=firmware, kind="cdrom", timeout=180)
    assert result.ok, result.describe()
    f = result.fields()
    cmdline = f["cmdline"].split()
    assert f"nestos.liveiso={demo_artifacts.volume_id}" in cmdline
    assert "ignition.firstboot" in cmdline
    # nothing after the kargs area made it onto the command line
    assert not any("#" in arg for arg in cmdline)
    assert f["live_initramfs"] == "present"
    assert "config_ign" not in f  # images/ignition.img is all zeros
    assert f["rootfs"].startswith("iso /dev/sr")


def test_pxe_files_boot(demo_artifacts: Artifacts) -> None:  # noqa: F811
    require_qemu()
    result = boot(
        None,
        kind="kernel",
        kernel=demo_artifacts.pxe_kernel,
        initrd=[demo_artifacts.pxe_initramfs, demo_artifacts.pxe_rootfs],
        append="console=ttyS0,115200n8 panic=1 ignition.firstboot ignition.platform.id=metal",
        timeout=180,
    )
    assert result.ok, result.describe()
    f = result.fields()
    assert "ignition.platform.id=metal" in f["cmdline"].split()
    assert f["live_initramfs"] == "present"
    assert f["rootfs"] == "initrd"  # root.squashfs from rootfs.img, appended as a second initrd


def test_harness_kills_qemu_on_timeout(demo_artifacts: Artifacts) -> None:  # noqa: F811
    require_qemu()
    result = boot(demo_artifacts.iso, firmware="bios", kind="cdrom", timeout=2)
    assert result.timed_out and not result.ok
    assert result.seconds < 10


@pytest.mark.root
def test_demo_run_installs_and_boots(demo_artifacts: Artifacts) -> None:  # noqa: F811
    """The README's demo: `python -m nestos_demo run` (one firmware here to save CPU time)."""
    require_loop()
    require_qemu()
    env = dict(os.environ, PYTHONPATH=str(REPO / "packaging" / "demo"))
    proc = subprocess.run(
        [sys.executable, "-m", "nestos_demo", "run", "--firmware", "bios"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Install complete." in out
    assert "Demo OK" in out
    # the demo ends in an SSH login (key only) as the user its Ignition config created, and
    # prints what that config applied on the installed system's first boot
    login = out.split("--- BIOS: ssh core@127.0.0.1", 1)[1]
    assert "(key only)" in login.splitlines()[0]
    after = {c: v for c, v in _commands(login)}
    assert after["hostname"] == "nestos-demo"
    assert 'NAME="NestOS"' in after["grep -E '^(NAME|VERSION)=' /etc/os-release"]
    cmdline = after["cat /proc/cmdline"].split()
    assert "nestos.demo=1" in cmdline and "ignition.firstboot" in cmdline, cmdline
    demo_file = after["ls -l /etc/nestos-demo && cat /etc/nestos-demo"].splitlines()
    assert demo_file[0].split()[:4] == ["-rw-r-----", "1", "core", "nestos-demo"], demo_file
    assert demo_file[1] == "installed by the nestos-installer demo"
    assert "nestos-demo-hello.service" in after["cat /var/lib/nestos-demo/hello"]
    assert ":802-3-ethernet:" in after["nmcli -t connection show --active"]


def _commands(login: str) -> List[Tuple[str, str]]:
    """The demo's `$ command` lines, each with the output printed under it."""
    out: List[Tuple[str, str]] = []
    for block in login.split("\n$ ")[1:]:
        command, _, text = block.partition("\n")
        out.append((command, text.split("\n\n", 1)[0].strip()))
    return out
