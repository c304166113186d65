"""The disk-booted test hosts (fixtures/testhost) are the servers the x2nestos --host proofs
need: Debian 12 booted by GRUB from its own disk, `/` on LVM, reached over SSH with strict
host-key checking, no python3, kexec usable; and the variants (two PVs, no kexec, an address
that exists only at runtime). One boot per variant; the builder locks its cache, so xdist
workers share it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fixtures.testhost.build import HOSTNAME, TOOLS, HostImage, Variant, build_image
from helpers.capabilities import require, require_qemu, require_tools
from helpers.testhost import (
    HostVM,
    served_host_keys,
    write_known_hosts,
)
from helpers.tools import X2NESTOS

pytestmark = [
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.slow,
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


def test_two_pv_host(tmp_path: Path) -> None:
    """Derived from the LVM base (what every variant shares: booted by GRUB from its disk,
    sshd keys-only for root and a passwordless sudo user, kexec usable, no python3 anywhere),
    vg0 spans two whole disks and the root LV sits on both of them. The LVM base itself and
    the runtime-net and no-kexec variants are the hosts of test_x2nestos_remote.py and
    test_fleet_ansible.py, which check their layouts before converting them."""
    img = image(Variant.TWO_PV)
    assert len(img.disks) == 2
    with HostVM(img, tmp_path / "vm").running() as vm:
        print(f"two-pv: boot to SSH {vm.boot_seconds:.0f}s")
        check_ssh_identity(vm, tmp_path)
        assert vm.ssh("findmnt -n -o SOURCE /boot") == "/dev/vda2"
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
        assert vm.ssh("kexec --version").startswith("kexec-tools")
        assert vm.ssh("cat /sys/kernel/kexec_loaded") == "0"
        # the sudo user logs in with its own key and becomes root without a password
        assert vm.ssh("sudo -n id -u", user="admin") == "0"
        sshd = vm.ssh("sshd -T").splitlines()
        assert "passwordauthentication no" in sshd
        assert "permitrootlogin without-password" in sshd
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
        # issue 17: x2nestos --host finds both disks under the root LV and names neither
        no_default = _doctor(vm, tmp_path)
        target = [c for c in no_default["checks"] if c["check"] == "target"]
        assert [c["status"] for c in target] == ["fail"], no_default["checks"]
        assert "on 2 disks" in target[0]["detail"] and "-d" in target[0]["detail"], target
        assert no_default["target"] is None and not no_default["ok"]
        chosen = _doctor(vm, tmp_path, "-d", "/dev/disk/by-id/virtio-testhost-disk1")
        assert chosen["target"]["stable-path"] == "/dev/disk/by-id/virtio-testhost-disk1"
        lv = _doctor(vm, tmp_path, "-d", "/dev/mapper/vg0-root")  # a volume is never a target
        assert lv["target"] is None and not lv["ok"]


def _doctor(vm: HostVM, tmp: Path, *args: str) -> Dict[str, Any]:
    """`x2nestos doctor --host --json` against the running test host (no artifacts needed)."""
    argv = [
        X2NESTOS, "doctor", "--json", "--host", "root@127.0.0.1", "--port", str(vm.port),
        "--identity", str(vm.image.identity("root")),
        "--ssh-option", f"UserKnownHostsFile={vm.known_hosts}",
        "--ssh-option", "StrictHostKeyChecking=yes", *args,
    ]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TMPDIR": str(tmp)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    d: Dict[str, Any] = json.loads(proc.stdout)
    return d
