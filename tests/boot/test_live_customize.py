"""`iso/pxe customize` with upstream's semantics, over SSH: the live system's real Ignition
applies the embedded config (user, unit), pre/post-install hooks run in order around the install,
the --network-keyfile profile is active live and, carried, installed (with --dest-ignition).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from helpers.capabilities import have, require
from helpers.images import OsImage, os_image  # noqa: F401
from helpers.ssh import Guest, KeyPair, booted, generate_key, require_ssh
from helpers.tools import NESTOS_INSTALLER
from nestos_demo import ignition, liveroot
from nestos_demo.autoiso import build_autoinstall_iso
from nestos_demo.kernel import ensure_kernel
from nestos_demo.qemu import Disk

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]

MiB = 1 << 20
LIVE_ADDR = "10.0.2.50"  # the --network-keyfile profile's address (QEMU's DHCP gives .15)
PROFILE = "nestos-carried"
KEYFILE = f"""[connection]
id={PROFILE}
type=ethernet
autoconnect=true

[ipv4]
method=manual
address1={LIVE_ADDR}/24,10.0.2.2

[ipv6]
method=disabled
"""
LIVE_UNIT = "nestos-live-hello.service"
LIVE_UNIT_TEXT = """[Unit]
Description=A unit from the live Ignition config (--live-ignition)

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo live-ignition-unit-ran >/run/nestos-live-hello'

[Install]
WantedBy=nestos-installer.target
"""
# Each hook notes whether the target disk already has NestOS's `boot` filesystem.
HOOK = """#!/bin/sh
label=$(blkid -p -s LABEL -o value /dev/vda3 2>/dev/null || true)
echo "{name} ${{label:-none}}" >>/run/nestos-hooks.log
"""
INSTALL_TIMEOUT = 900
ISO_KARG = "nestos.test=iso-customized"
DEST_HOSTNAME = "nestos-customized"


@dataclass(frozen=True)
class Inputs:
    key: KeyPair
    args: List[str]  # the customize options shared by `iso` and `pxe customize`


def _inputs(tmp: Path) -> Inputs:
    """The files `customize` embeds: live and dest Ignition, hooks, keyfile, a CA bundle."""
    key = generate_key(tmp / "key", "tester@nestos")
    # root: an unattended live boot never reaches multi-user.target, so pam_nologin keeps
    # every other user out (systemd-user-sessions never runs)
    user = {"name": "root", "sshAuthorizedKeys": [key.public]}
    live = {
        "ignition": {"version": "3.3.0"},
        "passwd": {"users": [user]},
        "systemd": {"units": [{"name": LIVE_UNIT, "enabled": True, "contents": LIVE_UNIT_TEXT}]},
    }
    (tmp / "live.ign").write_text(json.dumps(live))
    dest = ignition.firstboot_config(key.public, hostname=DEST_HOSTNAME)
    ignition.write_config(tmp / "dest.ign", dest)
    for name in ("pre", "post"):
        (tmp / f"{name}.sh").write_text(HOOK.format(name=name))
    (tmp / f"{PROFILE}.nmconnection").write_text(KEYFILE)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2",
         "-subj", "/CN=nestos test CA",
         "-keyout", str(tmp / "ca.key"), "-out", str(tmp / "ca.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    args = [
        "--live-ignition", str(tmp / "live.ign"),
        "--dest-ignition", str(tmp / "dest.ign"),
        "--dest-device", "/dev/vda",
        "--pre-install", str(tmp / "pre.sh"),
        "--post-install", str(tmp / "post.sh"),
        "--network-keyfile", str(tmp / f"{PROFILE}.nmconnection"),
        "--ignition-ca", str(tmp / "ca.pem"),
    ]  # fmt: skip
    return Inputs(key, args)


def _blank_disk(path: Path, image: OsImage) -> Path:
    with open(path, "wb") as f:
        f.truncate(image.raw.stat().st_size + 64 * MiB)
    return path


def _check_live_and_wait_for_install(guest: Guest) -> None:
    """In the live system: the install finished; Ignition's unit, the hooks, the profile."""
    guest.sh(
        f"timeout {INSTALL_TIMEOUT} sh -c 'until systemctl is-active -q nestos-installer.target;"
        " do systemctl is-failed -q nestos-installer.service && exit 1; sleep 2; done'",
        timeout=INSTALL_TIMEOUT + 60,
    )
    assert guest.sh("cat /run/nestos-live-hello").strip() == "live-ignition-unit-ran"
    # both hooks ran, in order: pre before the disk had `boot`, post after the install wrote it
    assert guest.sh("cat /run/nestos-hooks.log").splitlines() == ["pre none", "post boot"]
    active = guest.sh("nmcli -t -f NAME,TYPE connection show --active")
    assert f"{PROFILE}:802-3-ethernet" in active, active
    log = guest.sh("journalctl -b -u nestos-installer.service --no-pager")
    assert "install --config-file /etc/nestos/installer.d/" in log, log[-3000:]
    assert "--copy-network" in log or "Copying /etc/NetworkManager" in log, log[-3000:]
    # Ignition (not a script of ours) wrote the files: its result record is there
    assert (
        "fetch-offline passed" in guest.vm.serial()
        or guest.sh("sudo test -e /etc/.ignition-result.json && echo yes").strip() == "yes"
    )


def _check_installed(guest: Guest, karg: str = "") -> None:
    """The installed system's first boot: the dest config, the carried profile, `karg`."""
    assert guest.sh("hostname").strip() == DEST_HOSTNAME
    assert guest.sh(f"stat -c '%a %U %G' {ignition.DEMO_FILE}").split() == [
        "640", ignition.FIRSTBOOT_USER, ignition.FIRSTBOOT_GROUP,
    ]  # fmt: skip
    assert DEST_HOSTNAME in guest.sh(f"cat {ignition.FIRSTBOOT_UNIT_OUTPUT}")
    active = guest.sh("nmcli -t -f NAME,TYPE connection show --active")
    assert f"{PROFILE}:802-3-ethernet" in active, active
    cmdline = guest.sh("cat /proc/cmdline").split()
    assert "ignition.firstboot" in cmdline, cmdline
    assert not karg or karg in cmdline, cmdline


@pytest.mark.timeout(2400)
def test_iso_customize_autoinstall_over_ssh(
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A customized live ISO (UEFI CD) with the first-boot image baked in installs unattended,
    driven by the embedded installer config alone (no nestos.inst.* karg names a disk or a
    config); it stays up (nestos.inst.skip_reboot) to be checked, then the disk boots (BIOS)
    with the --dest-karg-append karg."""
    require_ssh()
    require(have("openssl", "mmdebstrap"), "needs openssl and mmdebstrap")
    inputs = _inputs(tmp_path)
    base = build_autoinstall_iso(os_image.raw_zst, os_image.raw_zst_sig, os_image.public_key)
    iso = tmp_path / "custom.iso"
    subprocess.run(
        [NESTOS_INSTALLER, "iso", "customize", *inputs.args, "--dest-karg-append", ISO_KARG,
         "--live-karg-append", "nestos.inst.skip_reboot", "-o", str(iso), str(base)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    disk = _blank_disk(tmp_path / "disk.raw", os_image)
    with booted(
        iso, inputs.key, tmp_path, name="live-iso", user="root", firmware="uefi", kind="cdrom",
        guest_addr=LIVE_ADDR, memory=3072, extra_disks=[Disk(disk)],
    ) as live:  # fmt: skip
        _check_live_and_wait_for_install(live)
        assert "UEFI QEMU DVD-ROM" in live.vm.serial(), "OVMF did not boot the CD"
        kargs = live.sh("cat /proc/cmdline").split()
        assert any(k.startswith("nestos.liveiso=") for k in kargs), kargs
        assert [k for k in kargs if k.startswith("nestos.inst.")] == ["nestos.inst.skip_reboot"]
        log = live.sh("journalctl -b -u nestos-installer.service --no-pager")
        assert "--image-file /usr/share/nestos-installer/metal/" in log, log[-3000:]
    with booted(disk, inputs.key, tmp_path, name="installed", firmware="bios",
                guest_addr=LIVE_ADDR) as installed:  # fmt: skip
        _check_installed(installed, ISO_KARG)


@pytest.mark.timeout(2400)
def test_pxe_customize_autoinstall_over_ssh(
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A `pxe customize`d live initramfs + the offline image initrd (kernel boot, BIOS) installs
    unattended and stays up (nestos.inst.skip_reboot); then the disk boots (UEFI)."""
    require_ssh()
    require(have("openssl", "mmdebstrap"), "needs openssl and mmdebstrap")
    inputs = _inputs(tmp_path)
    rootfs = liveroot.build_live_rootfs()
    custom = tmp_path / "custom-initramfs.img"
    subprocess.run(
        [NESTOS_INSTALLER, "pxe", "customize", *inputs.args, "-o", str(custom), str(rootfs)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    offline = liveroot.offline_image_cpio(
        os_image.raw_zst, os_image.raw_zst_sig, os_image.public_key, tmp_path / "offline.cpio"
    )
    disk = _blank_disk(tmp_path / "disk.raw", os_image)
    append = (
        "console=ttyS0,115200n8 panic=1 ignition.firstboot ignition.platform.id=metal "
        "nestos.inst.skip_reboot"
    )
    with booted(
        disk, inputs.key, tmp_path, name="live-pxe", user="root", firmware="bios", kind="kernel",
        kernel=ensure_kernel().vmlinuz, initrd=[custom, offline], append=append,
        guest_addr=LIVE_ADDR, memory=3072,
    ) as live:  # fmt: skip
        _check_live_and_wait_for_install(live)
    with booted(disk, inputs.key, tmp_path, name="installed", firmware="uefi",
                guest_addr=LIVE_ADDR) as installed:  # fmt: skip
        _check_installed(installed)
