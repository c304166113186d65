"""Issue 16's proof: x2nestos on this machine (the controller) converts the disk-booted LVM test
host (fixtures/testhost: Debian 12, GRUB, `/` on LVM, no python3) over SSH. One guest: `doctor
--host --json` and `plan --host --sudo --json` first (the facts match what the guest has), then
`convert --host --yes --json` with signed live PXE files carrying the first-boot image; the JSON
phases are asserted, then we log in to the converted host with the carried user key, strictly
checking its carried host key. The guest's address and default route exist at runtime only (no
config file names them; issue 17): the plan carries them as a static profile, and the converted
host answers at that same address (the forwarded port leads to it and nowhere else).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fixtures.testhost.build import HOSTNAME, TOOLS, HostImage, Variant, build_image
from fixtures.testhost.livepxe import signed_live_pxe
from helpers.capabilities import require, require_qemu, require_tools
from helpers.images import OsImage, os_image  # noqa: F401
from helpers.testhost import GATEWAY, RUNTIME_ADDRESS, HostVM
from helpers.tools import X2NESTOS

pytestmark = [
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.slow,
]

PHASES = ["probe", "plan", "stage", "loaded", "jumped", "live", "installing", "rebooted"]
PHASES += ["verified"]
CONVERTED = "/etc/x2nestos-test-converted"  # a new file: Ignition overwrites none by default
USER_IGN = {
    "ignition": {"version": "3.3.0"},
    "storage": {"files": [{"path": CONVERTED, "contents": {"source": "data:,converted%0A"}}]},
}
MEMORY = 3072  # the live environment holds its root and the first-boot image in RAM
TARGET = "/dev/disk/by-id/virtio-testhost-disk0"  # the disk under vg0's only PV


def _image() -> HostImage:
    require_qemu()
    require_tools(*TOOLS, "ssh", "ssh-keygen", "gpg", "gpgv", "zstd", "cpio")
    require(os.geteuid() == 0, "building the test host and the live rootfs needs root")
    return build_image(Variant.RUNTIME_NET)


def _ssh_args(vm: HostVM, user: str = "root") -> List[str]:
    """How the controller reaches the guest: our key, the guest's key on record (strict)."""
    return [
        "--host", f"{user}@127.0.0.1", "--port", str(vm.port),
        "--identity", str(vm.image.identity(user)),
        "--ssh-option", f"UserKnownHostsFile={vm.known_hosts}",
        "--ssh-option", "StrictHostKeyChecking=yes",
        "--ssh-option", "IdentitiesOnly=yes",
    ]  # fmt: skip


def x2n(args: List[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(
        [X2NESTOS, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
        check=False,
    )


def _doctor(args: List[str], tmp: Path, verb: str = "doctor") -> Dict[str, Any]:
    proc = x2n([verb, *args, "--json"], tmp, 600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d: Dict[str, Any] = json.loads(proc.stdout)
    return d


def _check_doctor(vm: HostVM, args: List[str], src: List[str], tmp: Path) -> None:
    """doctor --host: the facts are the guest's (its LVM root's disk, address, users); the
    same through a sudo user (plan --sudo), whose plan carries the runtime-only address."""
    d = _doctor(args, tmp)
    admin = _doctor([*_ssh_args(vm, "admin"), "--sudo", *src], tmp, verb="plan")
    assert admin["ssh"]["login-user"] == "admin" and admin["ssh"]["sudo"] is True
    for key in ("ok", "target", "host", "kexec", "architecture"):
        assert admin[key] == d[key], key
    assert d["ok"], [c for c in d["checks"] if c["status"] != "ok"]
    assert d["target"]["stable-path"] == TARGET
    assert d["target"]["size"] == int(vm.ssh("blockdev --getsize64 /dev/vda"))
    assert vm.ssh("pvs --noheadings -o pv_name").split() == ["/dev/vda3"]  # what it stands on
    assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"
    # the address and default route exist at runtime only: no network config file names them
    assert vm.ssh("ip -4 -o addr show dev ens3").split()[3] == RUNTIME_ADDRESS
    dirs = "/etc/network /etc/systemd/network /etc/NetworkManager /etc/netplan"
    address = RUNTIME_ADDRESS.split("/")[0]
    named = vm.ssh(f"grep -rlF -e {address} -e ens3 {dirs} 2>/dev/null || true")
    assert named == "", f"config files name the runtime address: {named}"
    assert d["host"]["hostname"] == HOSTNAME == vm.ssh("hostname")
    assert d["ssh"]["login-user"] == "root"
    assert d["ssh"]["ssh-interface"] == "ens3"
    assert d["ssh"]["controller-address"] == "10.0.2.2"  # QEMU's gateway: our forwarded port
    assert "kexec" in d["ssh"]["tools"] and "python3" not in d["ssh"]["tools"]
    assert d["host"]["addresses"]["ens3"] == [RUNTIME_ADDRESS], d["host"]
    assert d["host"]["default-route"] == ["ens3"]
    # no file configures it, yet it is carried: a static profile with its address and gateway
    ens3 = [i for i in admin["network"] if i["interface"] == "ens3"]
    assert [i["becomes"] for i in ens3] == ["static"], admin["network"]
    assert RUNTIME_ADDRESS in ens3[0]["detail"] and GATEWAY in ens3[0]["detail"], ens3
    keyfiles = "".join(admin["network-keyfiles"].values())
    assert RUNTIME_ADDRESS in keyfiles and GATEWAY in keyfiles, keyfiles
    assert d["host"]["os"].startswith("Debian GNU/Linux 12")
    assert d["host"]["kernel"] == vm.ssh("uname -r")
    assert sorted(d["host"]["users-with-keys"]) == ["admin", "root"]


def _events(stdout: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _check_phases(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    phases = [e for e in events if e["event"] == "phase"]
    assert [(e["phase"], e["status"]) for e in phases] == [(p, "ok") for p in PHASES], phases
    by = {e["phase"]: e for e in phases}
    for f in ("kernel", "initrd"):
        assert len(by["stage"][f]["sha256"]) == 64 and by["stage"][f]["size"] > 0
    assert by["verified"]["hostname"] == HOSTNAME and by["verified"]["id"] == "nestos"
    assert any(e["event"] == "log" and e.get("phase") == "installing" for e in events)
    result = events[-1]
    assert result["event"] == "result" and result["ok"] and result["state"] == "verified"
    assert result["exit-code"] == 0 and not result["returned"]
    assert list(result["phases"]) == PHASES
    return result


@pytest.mark.timeout(3600)
def test_convert_over_ssh(os_image: OsImage, tmp_path: Path) -> None:  # noqa: F811
    """doctor, then convert --host: probe .. verified; the host is back with its own key."""
    image = _image()
    pxe = signed_live_pxe(tmp_path, os_image)
    (tmp_path / "user.ign").write_text(json.dumps(USER_IGN))
    src = ["--pxe", str(pxe), "--keyring", str(tmp_path / "key.asc")]
    src += ["-i", str(tmp_path / "user.ign")]
    vm = HostVM(image, tmp_path / "host", memory=MEMORY)
    with vm.running():
        print(f"test host up in {vm.boot_seconds:.0f}s")
        args = [*_ssh_args(vm), *src]
        _check_doctor(vm, args, src, tmp_path)
        start = time.monotonic()
        proc = x2n(["convert", *args, "--yes", "--json", "--timeout", "1500"], tmp_path, 3000)
        wall = time.monotonic() - start
        (tmp_path / "convert.jsonl").write_text(proc.stdout)
        events = _events(proc.stdout)
        timing = {e["phase"]: e["seconds"] for e in events if e["event"] == "phase"}
        print(f"convert --host: {wall:.0f}s wall, rc {proc.returncode}; phases {timing}")
        assert proc.returncode == 0, proc.stderr[-3000:] + "\n" + vm.describe()
        _check_phases(events)
        # our own login, strict against the host keys recorded when the test host was built
        assert vm.ssh("hostname") == HOSTNAME
        assert vm.address == RUNTIME_ADDRESS.split("/")[0]  # the port forward's only target
        assert RUNTIME_ADDRESS in vm.ssh("ip -4 -o addr show dev ens3 || ip -4 -o addr")
        release = vm.ssh("cat /etc/os-release")
        assert 'NAME="NestOS"' in release, release
        assert vm.ssh(f"cat {CONVERTED}") == "converted"  # the user's Ignition config applied
        # the old LVM root is gone: NestOS's partitions on the same disk
        assert vm.ssh("test -e /dev/mapper/vg0-root || echo gone") == "gone"
        assert "boot" in vm.ssh("lsblk -n -o LABEL /dev/vda").split()
