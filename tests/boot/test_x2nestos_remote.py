"""Issue 17's proof over SSH: x2nestos on this machine (the controller) against the
disk-booted LVM test host (fixtures/testhost: Debian 12, GRUB, `/` on LVM, no python3, its
address and default route set at runtime only: no config file names them). `doctor --host
--json` and `plan --host --sudo --json`: the facts match what the guest has, the plan picks
the physical disk under the LVM root and carries the runtime address as a static profile.
Then a `convert --host` whose live environment cannot reach its image: its pre-write check
fails, it reboots, and the controller reports `returned` once the old system answers with its
own host key (strictly checked); the disk's first MiB is unchanged and doctor finds the host
as it was. (A conversion of this host that completes is test_fleet_ansible.py's canary, run
by the role through the same `x2nestos convert --host --json`.)
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
from helpers.testhost import FIRST_MIB, GATEWAY, RUNTIME_ADDRESS, HostVM
from helpers.tools import X2NESTOS

pytestmark = [
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.slow,
]

PHASES = ["probe", "plan", "stage", "loaded", "jumped", "live", "installing", "rebooted"]
PHASES += ["verified"]
EXIT = {p: 10 + i for i, p in enumerate(PHASES)}  # the table in x2nestos/README.md
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


UNREACHABLE = "http://127.0.0.1:9/nestos.raw.zst"  # nothing listens there in the live env


def _convert(vm: HostVM, src: List[str], tmp: Path, name: str) -> List[Dict[str, Any]]:
    """convert --host --yes --json: its events (kept in tmp/NAME.jsonl), timed."""
    start = time.monotonic()
    args = [*_ssh_args(vm), *src, "--yes", "--json", "--timeout", "1500"]
    proc = x2n(["convert", *args], tmp, 3000)
    wall = time.monotonic() - start
    (tmp / f"{name}.jsonl").write_text(proc.stdout)
    events = _events(proc.stdout)
    timing = {e["phase"]: (e["status"], e["seconds"]) for e in events if e["event"] == "phase"}
    print(f"convert --host ({name}): {wall:.0f}s, rc {proc.returncode}; {timing}")
    assert events and events[-1]["event"] == "result", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == events[-1]["exit-code"], (proc.returncode, events[-1])
    return events


def _goes_back(vm: HostVM, src: List[str], tmp: Path) -> None:
    """A conversion whose live check fails (no offline image in the PXE files, the image URL
    unreachable): `returned`, and the host is its old self again, its disk as it was."""
    before = vm.ssh(FIRST_MIB)
    boot_id = vm.ssh("cat /proc/sys/kernel/random/boot_id")
    events = _convert(vm, src, tmp, "goes-back")
    result = events[-1]
    assert not result["ok"] and result["returned"] and not result["untouched"], result
    # one line naming the old system and the live check's cause, from the installer
    assert result["reason"].startswith("returned: "), result
    assert "Debian" in result["reason"] and "\n" not in result["reason"], result
    assert "fetch failed" in result["reason"] and UNREACHABLE in result["reason"]
    phases = [e for e in events if e["event"] == "phase"]
    assert [e["phase"] for e in phases if e["status"] == "ok"][:5] == PHASES[:5], phases
    failed = phases[-1]
    assert failed["status"] == "failed" and failed["phase"] in ("live", "installing")
    assert result["exit-code"] == EXIT[failed["phase"]], (result, failed)
    # the old system, as it was: its own host key (strict known_hosts), hostname, address
    assert vm.ssh("cat /proc/sys/kernel/random/boot_id") != boot_id  # it did leave
    assert vm.ssh("hostname") == HOSTNAME
    assert vm.ssh(". /etc/os-release; echo $ID") == "debian"
    assert vm.ssh("findmnt -n -o SOURCE /") == "/dev/mapper/vg0-root"
    assert RUNTIME_ADDRESS in vm.ssh("ip -4 -o addr show dev ens3")
    assert vm.ssh(FIRST_MIB) == before
    assert vm.ssh("cat /sys/kernel/kexec_loaded") == "0"
    # x2nestos removed what it staged (the initrd holds the Ignition config and host keys)
    assert vm.ssh("ls -A /var/lib/x2nestos 2>/dev/null || true") == ""


@pytest.mark.timeout(3600)
def test_doctor_then_a_failed_live_check_goes_back(tmp_path: Path) -> None:
    """doctor and plan --host; then a convert --host whose live check fails: the host goes
    back to its old system (issue 17), and could be converted again."""
    image = _image()
    (tmp_path / "user.ign").write_text(json.dumps(USER_IGN))
    pxe = signed_live_pxe(tmp_path, None)
    src = ["--pxe", str(pxe), "--keyring", str(tmp_path / "key.asc")]
    src += ["-i", str(tmp_path / "user.ign")]
    vm = HostVM(image, tmp_path / "host", memory=MEMORY)
    with vm.running():
        print(f"test host up in {vm.boot_seconds:.0f}s")
        _check_doctor(vm, [*_ssh_args(vm), *src], src, tmp_path)
        unreachable = ["--live-karg", f"nestos.inst.image_url={UNREACHABLE}"]
        _goes_back(vm, [*src, *unreachable], tmp_path)
        # nothing of the attempt is left on the host: doctor finds it as it was
        again = _doctor([*_ssh_args(vm), *src], tmp_path)
        assert again["ok"] and again["target"]["stable-path"] == TARGET, again["checks"]
