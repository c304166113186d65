"""`iso/pxe customize` with upstream's semantics, over SSH: the live system's real Ignition
applies the embedded config (user, unit), pre/post-install hooks run in order around the install,
the --network-keyfile profile is active live; the installed disk's boot partition holds the
--dest-ignition config, the carried profile and the --dest-karg-append karg for its first boot
(which test_firstboot.py boots and logs into).
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

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


def _check_written(live: Guest, dest: object, karg: str = "") -> None:
    """In the live system, after the install: the target's boot partition holds the dest
    config (0600: the one given, merged with the --ignition-ca bundle), the --network-keyfile
    profile for the first boot, the firstboot stamp, `karg` in the boot entry. (How a first
    boot applies them is test_firstboot.py's proof, for any installed disk.)"""
    live.sh('mkdir -p /run/check && mount -o ro "$(blkid -L boot)" /run/check')
    try:
        ign = "/run/check/ignition/config.ign"
        assert live.sh(f"stat -c %a {ign}").strip() == "600"
        written = json.loads(live.sh(f"cat {ign}"))["ignition"]
        (merged,) = written["config"]["merge"]
        assert json.loads(_inline(merged)) == dest
        (ca,) = written["security"]["tls"]["certificateAuthorities"]
        assert _inline(ca).startswith(b"-----BEGIN CERTIFICATE-----")
        carried = live.sh("ls /run/check/nestos-firstboot-network").split()
        assert f"{PROFILE}.nmconnection" in carried, carried
        live.sh("test -f /run/check/ignition.firstboot")
        options = live.sh("grep -h '^options ' /run/check/loader/entries/*.conf").split()
        assert not karg or karg in options, options
    finally:
        live.sh("umount /run/check")


def _inline(resource: Dict[str, str]) -> bytes:
    """The bytes of an inline Ignition resource (a base64 data URL, maybe gzip-compressed)."""
    data = base64.b64decode(resource["source"].split(";base64,", 1)[1])
    return gzip.decompress(data) if resource.get("compression") == "gzip" else data


@pytest.mark.timeout(2400)
def test_iso_customize_autoinstall_over_ssh(
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A customized live ISO (UEFI CD) with the first-boot image baked in installs unattended,
    driven by the embedded installer config alone (no nestos.inst.* karg names a disk or a
    config); it stays up (nestos.inst.skip_reboot) to be checked, the installed boot entry
    carrying the --dest-karg-append karg."""
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
        _check_written(live, json.loads((tmp_path / "dest.ign").read_text()), ISO_KARG)


@pytest.mark.timeout(2400)
def test_pxe_customize_autoinstall_over_ssh(
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A `pxe customize`d live initramfs + the offline image initrd (kernel boot, BIOS) installs
    unattended and stays up (nestos.inst.skip_reboot); the installed disk's boot partition
    holds what its first boot applies. (The ISO test boots such a disk and logs in; the
    first-boot test boots one under UEFI and then BIOS.)"""
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
        _check_written(live, json.loads((tmp_path / "dest.ign").read_text()))
