"""The first-boot image installed by `nestos-installer install` comes up as NestOS does, checked
over SSH (not on the bytes): Ignition's user, groups, files, unit and hostname, a --copy-network
static profile, --firstboot-args on the first boot only, --append/--delete-karg on both boots.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.images import OsImage, os_image  # noqa: F401
from helpers.loopdev import loop_disk
from helpers.ssh import booted, generate_key, host_key, require_ssh
from nestos_demo import ignition

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]

MiB = 1 << 20
HOSTNAME = "nestos-fb-test"
STATIC_ADDR = "10.0.2.50"  # not what QEMU's DHCP hands out: reachable only via the profile
STATIC_PROFILE = f"""[connection]
id=nestos-static
type=ethernet
autoconnect=true

[ipv4]
method=manual
address1={STATIC_ADDR}/24,10.0.2.2
dns=10.0.2.3;

[ipv6]
method=disabled
"""
FIRSTBOOT_ARG = "nestos.test.firstboot=1"
APPENDED = "nestos.test.karg=appended"
DELETED = "panic=1"  # in the image's BLS options


def _install(image: OsImage, disk: Path, config: Path, netdir: Path) -> None:
    with loop_disk(disk, image.raw.stat().st_size + 64 * MiB) as dev:
        proc = subprocess.run(
            [
                sys.executable, "-m", "nestos_installer", "install",
                "--image-file", str(image.raw_zst), "--keyring", str(image.public_key),
                "--ignition-file", str(config),
                "--append-karg", APPENDED, "--delete-karg", DELETED,
                "--firstboot-args", FIRSTBOOT_ARG,
                "--copy-network", "--network-dir", str(netdir),
                dev,
            ],
            check=False, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr


@pytest.mark.timeout(1800)  # two boots of ~90 s each on an idle machine; CI shares 2 cores
def test_install_first_boot_applies_ignition_then_second_boot(
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_ssh()
    key = generate_key(tmp_path / "key", "tester@nestos")
    hkey = host_key(tmp_path / "hostkey")
    config = ignition.write_config(
        tmp_path / "config.ign",
        ignition.firstboot_config(key.public, hostname=HOSTNAME, host_key=hkey),
    )
    netdir = tmp_path / "nm"
    netdir.mkdir()
    (netdir / "static.nmconnection").write_text(STATIC_PROFILE)
    disk = tmp_path / "disk.raw"
    _install(os_image, disk, config, netdir)

    # first boot (UEFI): the key logs in, sshd shows the host key from the config (pinned)
    with booted(
        disk, key, tmp_path, name="first", firmware="uefi",
        guest_addr=STATIC_ADDR, pinned_host_key=hkey[1],
    ) as guest:  # fmt: skip
        state = guest.sh("systemctl is-system-running --wait || true").strip()
        assert state in ("running", "degraded"), state
        assert guest.sh("systemctl --failed --no-legend --plain").strip() == ""
        assert guest.sh("hostname").strip() == HOSTNAME
        groups = guest.sh("id -nG").split()
        assert "sudo" in groups and ignition.FIRSTBOOT_GROUP in groups, groups
        assert guest.sh(f"stat -c '%a %U %G' {ignition.DEMO_FILE}").split() == [
            "640", ignition.FIRSTBOOT_USER, ignition.FIRSTBOOT_GROUP,
        ]  # fmt: skip
        assert guest.sh(f"cat {ignition.DEMO_FILE}") == ignition.DEMO_FILE_TEXT
        assert HOSTNAME in guest.sh(f"cat {ignition.FIRSTBOOT_UNIT_OUTPUT}")
        assert guest.sh(f"systemctl is-enabled {ignition.FIRSTBOOT_UNIT}").strip() == "enabled"
        cmdline = guest.sh("cat /proc/cmdline").split()
        assert "ignition.firstboot" in cmdline and FIRSTBOOT_ARG in cmdline, cmdline
        assert APPENDED in cmdline and DELETED not in cmdline, cmdline
        active = guest.sh("nmcli -t -f NAME,TYPE connection show --active")
        assert "nestos-static:802-3-ethernet" in active, active
        assert f"inet {STATIC_ADDR}/24" in guest.sh("ip -4 -o addr show")
        keyfile = "/etc/NetworkManager/system-connections/static.nmconnection"
        assert guest.sh(f"sudo stat -c '%a %U' {keyfile}").split() == ["600", "root"]
        # the end of the first boot removed the stamp and the carried keyfiles from boot
        assert guest.sh("ls /boot").split().count("ignition.firstboot") == 0
        assert "nestos-firstboot-network" not in guest.sh("ls /boot").split()
        guest.reboot()

    # second boot (BIOS, same disk): no first-boot kargs; the rest held
    with booted(
        disk, key, tmp_path, name="second", firmware="bios",
        guest_addr=STATIC_ADDR, pinned_host_key=hkey[1],
    ) as guest:  # fmt: skip
        cmdline = guest.sh("cat /proc/cmdline").split()
        assert "ignition.firstboot" not in cmdline and FIRSTBOOT_ARG not in cmdline, cmdline
        assert APPENDED in cmdline and DELETED not in cmdline, cmdline
        assert guest.sh("hostname").strip() == HOSTNAME
        assert "nestos-static:802-3-ethernet" in guest.sh(
            "nmcli -t -f NAME,TYPE connection show --active"
        )
