"""The disk-booted test hosts (fixtures/testhost) are the servers the x2nestos --host proofs
need: Debian 12 booted by GRUB from its own disk, `/` on LVM, reached over SSH with strict
host-key checking, no python3, kexec usable; and the variants (two PVs, no kexec, an address
that exists only at runtime). One boot per variant, all in one xdist group.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import pytest

from fixtures.testhost.build import HOSTNAME, TOOLS, HostImage, Variant, build_image
from helpers.capabilities import require, require_qemu, require_tools
from helpers.testhost import (
    GATEWAY,
    RUNTIME_ADDRESS,
    HostVM,
    served_host_keys,
    write_known_hosts,
)

pytestmark = [
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.xdist_group("testhost"),
    pytest.mark.timeout(3600),
]


def image(variant: Variant) -> HostImage:
    require_qemu()
    require_tools(*TOOLS, "ssh", "ssh-keyscan")
    require(os.geteuid() == 0, "building the test host needs root (mmdebstrap, chroot)")
    start = time.monotonic()
    img = build_image(variant)
    print(
        f"{variant.value}: image ready in {time.monotonic() - start:.0f}s "
        f"(its build took {img.build_seconds:.0f}s)"
    )
    return img


def lsblk_tree(vm: HostVM, dev: str) -> List[Dict[str, object]]:
    """lsblk's inverse tree of `dev`: the device, then what it sits on, down to the disks."""
    out = json.loads(vm.ssh(["lsblk", "-J", "-s", "-o", "NAME,TYPE,SERIAL", dev]))
    devices: List[Dict[str, object]] = out["blockdevices"]
    return devices


def flatten(nodes: List[Dict[str, object]]) -> List[Dict[str, object]]:
    flat: List[Dict[str, object]] = []
    for n in nodes:
        flat.append(n)
        flat += flatten(n.get("children", []))  # type: ignore[arg-type]
    return flat


def check_ssh_identity(vm: HostVM, tmp_path: Path) -> None:
    """The host answers with the key recorded at build time, and only that key is accepted."""
    assert vm.host_key in served_host_keys(vm.port)
    guest_pub = vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert " ".join(guest_pub) == vm.host_key
    # strict checking is real: the same login, with another ed25519 key on record, is refused
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    key = " ".join(stranger.with_suffix(".pub").read_text().split()[:2])
    wrong = write_known_hosts(tmp_path / "wrong_known_hosts", "127.0.0.1", vm.port, [key])
    refused = replace(vm.target("root"), known_hosts=wrong).run("true", check=False, timeout=60)
    assert refused.returncode == 255
    assert b"Host key verification failed" in refused.stderr, refused.stderr


def test_lvm_host(tmp_path: Path) -> None:
    """Booted by GRUB from its disk; `/` on vg0/root over vda3; sshd keys-only for root and a
    passwordless sudo user; kexec usable; no python3 anywhere; DHCP on ens3 by ifupdown."""
    img = image(Variant.LVM)
    with HostVM(img, tmp_path / "vm").running() as vm:
        print(f"lvm: boot to SSH {vm.boot_seconds:.0f}s")
        check_ssh_identity(vm, tmp_path)
        assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"
        assert vm.ssh("findmnt -n -o SOURCE /boot") == "/dev/vda2"
        chain = [(n["name"], n["type"]) for n in flatten(lsblk_tree(vm, "/dev/mapper/vg0-root"))]
        assert chain == [("vg0-root", "lvm"), ("vda3", "part"), ("vda", "disk")], chain
        assert vm.ssh("cat /proc/cmdline").find("root=/dev/mapper/vg0-root") >= 0
        assert vm.ssh("lsblk -n -o PARTTYPENAME /dev/vda1") == "BIOS boot"
        assert vm.ssh("hostname") == HOSTNAME
        # files go both ways over the SSH channel, bytes and mode intact
        data = os.urandom(300_000)
        vm.target().write_file("/var/tmp/payload.bin", data, mode=0o600)
        assert vm.target().read_file("/var/tmp/payload.bin") == data
        assert vm.ssh("stat -c %a /var/tmp/payload.bin") == "600"
        # no python at all: neither a package nor a command
        assert vm.ssh("dpkg -l | grep -i python || true") == ""
        assert vm.target().run("command -v python3", check=False).returncode != 0
        assert vm.ssh("ls /usr/bin/python* 2>/dev/null || true") == ""
        assert vm.ssh("kexec --version").startswith("kexec-tools")
        assert vm.ssh("cat /sys/kernel/kexec_loaded") == "0"
        # the sudo user logs in with its own key and becomes root without a password
        assert vm.ssh("sudo -n id -u", user="admin") == "0"
        sshd = vm.ssh("sshd -T").splitlines()
        assert "passwordauthentication no" in sshd
        assert "permitrootlogin without-password" in sshd
        # DHCP on ens3, configured by ifupdown
        addr = json.loads(vm.ssh("ip -j addr show dev ens3"))[0]["addr_info"]
        v4 = [a for a in addr if a["family"] == "inet"]
        assert v4[0]["local"] == "10.0.2.15" and v4[0].get("dynamic") is True, v4
        assert "iface ens3 inet dhcp" in vm.ssh("cat /etc/network/interfaces")
        assert vm.ssh("ip route show default").startswith(f"default via {GATEWAY} dev ens3")


def test_runtime_address_host(tmp_path: Path) -> None:
    """The address and default route exist at runtime only: no network config file names
    them (issue 17's proof needs x2nestos to read the runtime state)."""
    img = image(Variant.RUNTIME_NET)
    address = RUNTIME_ADDRESS.split("/")[0]
    with HostVM(img, tmp_path / "vm").running() as vm:
        print(f"runtime-net: boot to SSH {vm.boot_seconds:.0f}s")
        assert vm.address == address
        addr = json.loads(vm.ssh("ip -j addr show dev ens3"))[0]["addr_info"]
        v4 = [a for a in addr if a["family"] == "inet"]
        assert [(a["local"], a["prefixlen"]) for a in v4] == [(address, 24)], v4
        assert "dynamic" not in v4[0]  # static, not a DHCP lease
        assert vm.ssh("ip route show default").startswith(f"default via {GATEWAY} dev ens3")
        dirs = "/etc/network /etc/systemd/network /etc/NetworkManager /etc/netplan"
        named = vm.ssh(f"grep -rlF -e {address} -e ens3 {dirs} 2>/dev/null || true")
        assert named == "", f"config files name the runtime address: {named}"
        assert vm.ssh("systemctl is-active testhost-runtime-net.service") == "active"
        assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"


def test_two_pv_host(tmp_path: Path) -> None:
    """vg0 spans two whole disks and the root LV sits on both of them."""
    img = image(Variant.TWO_PV)
    assert len(img.disks) == 2
    with HostVM(img, tmp_path / "vm").running() as vm:
        print(f"two-pv: boot to SSH {vm.boot_seconds:.0f}s")
        assert vm.ssh("vgs --noheadings -o pv_count vg0") == "2"
        pvs = sorted(
            ln.split() for ln in vm.ssh("pvs --noheadings -o pv_name,vg_name").splitlines()
        )
        assert pvs == [["/dev/vda3", "vg0"], ["/dev/vdb", "vg0"]], pvs
        tree = flatten(lsblk_tree(vm, "/dev/mapper/vg0-root"))
        disks = sorted(str(n["serial"]) for n in tree if n["type"] == "disk")
        assert disks == ["testhost-disk0", "testhost-disk1"], tree
        assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"
        size = int(vm.ssh("findmnt -b -n -o SIZE /"))
        assert size > 9 << 30  # grown over the second 8 GiB disk


def test_no_kexec_host(tmp_path: Path) -> None:
    """kexec-tools is not installed (its purge left the rest of the host as it was)."""
    img = image(Variant.NO_KEXEC)
    assert not img.variant.has_kexec
    with HostVM(img, tmp_path / "vm").running() as vm:
        print(f"no-kexec: boot to SSH {vm.boot_seconds:.0f}s")
        assert vm.target().run("command -v kexec", check=False).returncode != 0
        status = vm.ssh("dpkg-query -W -f '${db:Status-Abbrev}' kexec-tools 2>/dev/null || true")
        assert not status.startswith("ii"), status
        assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"
        assert vm.ssh("sudo -n id -u", user="admin") == "0"
