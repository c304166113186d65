"""Issue 18's proof: the nestos.x2nestos playbook converts a fleet of two disk-booted test hosts
(fixtures/testhost, an inventory on 127.0.0.1 ports) with the real x2nestos --host. Host a, the
canary, whose address and default route exist at runtime only (no config file names them),
converts: every phase of `convert --host --json` ok, and it answers at that address. Host b
(no kexec) fails its preflight and stops the run within the failure budget, untouched (first
MiB, host key, Debian); the report names it and why. The admin then gives b a package source
that has kexec-tools (a flat apt repository the test serves), and the same command with
`convert_install_kexec` (x2nestos --install-kexec: the host's own apt-get installs it)
converts only b (a skipped as already NestOS). Each converted host is reached by SSH with its
carried host key, strictly checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from fixtures.testhost.build import HOSTNAME, TOOLS, Variant, build_image
from fixtures.testhost.livepxe import signed_live_pxe
from helpers.ansible import ansible_env, build_collection, playbook
from helpers.capabilities import require, require_qemu, require_tools
from helpers.httpserver import TestServer
from helpers.images import OsImage, os_image  # noqa: F401
from helpers.testhost import FIRST_MIB, RUNTIME_ADDRESS, HostVM, served_host_keys
from helpers.tools import X2NESTOS

pytestmark = [
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.timeout(5400),
]
MEMORY = 3072  # the live environment holds its root and the first-boot image in RAM
MIRROR = "10.0.2.100"  # where host b reaches the test's apt repository
PHASES = ["probe", "plan", "stage", "loaded", "jumped", "live", "installing", "rebooted"]
PHASES += ["verified"]
# /etc/motd exists on the first-boot image: without overwrite Ignition's files stage fails there
# (and writes no later file, such as the carried host keys)
TEMPLATE = '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/motd", '
TEMPLATE += '"overwrite": true, '
TEMPLATE += '"contents": {"source": "data:,converted%20{{ inventory_hostname }}%0A"}}]}}'


def start_all(vms: List[HostVM]) -> None:
    """Boot the hosts side by side (each boot is minutes under TCG)."""
    with ThreadPoolExecutor(len(vms)) as pool:
        for done in [pool.submit(vm.start) for vm in vms]:
            done.result()


def inventory(path: Path, hosts: Dict[str, HostVM]) -> Path:
    """An ordinary inventory: address, port, user, key; the host key on record, strictly."""
    lines = ["[fleet]"]
    for name, vm in hosts.items():
        opts = [f"UserKnownHostsFile={vm.known_hosts}", "StrictHostKeyChecking=yes"]
        opts.append("IdentitiesOnly=yes")
        lines.append(
            f"{name} ansible_host=127.0.0.1 ansible_port={vm.port} ansible_user=root "
            f"ansible_ssh_private_key_file={vm.image.identity('root')} "
            f"convert_ssh_options='{json.dumps(opts)}'"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def debian_state(vm: HostVM) -> Tuple[str, List[str], str]:
    """(sha256 of the disk's first MiB, the served host keys, the OS) of a host."""
    return vm.ssh(FIRST_MIB), served_host_keys(vm.port), vm.ssh(". /etc/os-release; echo $ID")


def kexec_deb(tmp: Path) -> Path:
    """kexec-tools for bookworm: the one apt installed here (bootstrap.sh), else downloaded."""
    cached = sorted(Path("/var/cache/apt/archives").glob("kexec-tools_*_amd64.deb"))
    if cached:
        return cached[-1]
    (tmp / "debs").mkdir()
    subprocess.run(["apt-get", "download", "kexec-tools"], cwd=tmp / "debs", check=True)
    return next((tmp / "debs").glob("*.deb"))


def run(env: Dict[str, str], inv: Path, variables: Dict[str, Any], n: int) -> Dict[str, Any]:
    """One run of the playbook: its exit code, log, every host's record and the summary."""
    tmp = inv.parent
    t0 = time.monotonic()
    proc = playbook(env, inv, variables, timeout=3600)
    (tmp / f"run{n}.log").write_text(proc.stdout + proc.stderr)
    records = {h: result(tmp, h) for h in ("a", "b") if (tmp / f"results/{h}.json").exists()}
    summary = json.loads((tmp / "results/summary.json").read_text())
    print(f"run {n}: {time.monotonic() - t0:.0f}s, rc {proc.returncode}; {summary['lines']}")
    for h, rec in records.items():
        print(
            f"  {h}: {rec['outcome']} {[(p['phase'], p['seconds']) for p in rec.get('phases', [])]}"
        )
    return {"rc": proc.returncode, "log": proc.stdout[-4000:], "summary": summary, **records}


def result(tmp: Path, host: str) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads((tmp / "results" / f"{host}.json").read_text())
    return data


def check_converted(vm: HostVM, name: str) -> None:
    """Our own login: the carried root key, strictly against the host key of the old system;
    NestOS's partitions where the LVM root was; the address it had (for a runtime-only one,
    the forwarded port leads there and nowhere else)."""
    assert vm.ssh("hostname") == HOSTNAME
    assert 'NAME="NestOS"' in vm.ssh("cat /etc/os-release")
    assert vm.ssh("cat /etc/motd") == f"converted {name}"  # the per-host Ignition applied
    assert vm.host_key in served_host_keys(vm.port)
    assert vm.ssh("test -e /dev/mapper/vg0-root || echo gone") == "gone"
    assert "boot" in vm.ssh("lsblk -n -o LABEL /dev/vda").split()
    if vm.image.variant.runtime_net:
        assert RUNTIME_ADDRESS in vm.ssh("ip -4 -o addr show dev ens3 || ip -4 -o addr")


def check_phases(rec: Dict[str, Any]) -> None:
    """x2nestos convert --host --json, as the role recorded it: every phase ok, in order."""
    assert [(p["phase"], p["status"]) for p in rec["phases"]] == [(p, "ok") for p in PHASES]
    assert rec["exit-code"] == 0 and rec["state"] == "verified" and not rec["returned"], rec


def apt_repo(tmp: Path) -> Path:
    """A flat apt repository (`deb [trusted=yes] URL ./`) holding kexec-tools."""
    repo = tmp / "apt"
    repo.mkdir()
    deb = kexec_deb(tmp)
    (repo / deb.name).write_bytes(deb.read_bytes())
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True, check=True
    )
    (repo / "Packages").write_bytes(index.stdout)
    return repo


@pytest.fixture
def apt_server(tmp_path: Path) -> Iterator[TestServer]:
    require_tools("dpkg-scanpackages")
    with TestServer(apt_repo(tmp_path)) as srv:
        yield srv


@pytest.fixture
def fleet(tmp_path: Path, apt_server: TestServer) -> Iterator[Dict[str, HostVM]]:
    require_qemu()
    require_tools(*TOOLS, "ssh", "ssh-keygen", "ssh-keyscan", "gpg", "gpgv", "zstd", "cpio")
    require(os.geteuid() == 0, "building the test hosts and the live rootfs needs root")
    mirror = [(f"{MIRROR}:80", apt_server.port)]
    hosts = {
        "a": HostVM(build_image(Variant.RUNTIME_NET), tmp_path / "a", memory=MEMORY),
        "b": HostVM(
            build_image(Variant.NO_KEXEC), tmp_path / "b", memory=MEMORY, guest_forwards=mirror
        ),
    }
    try:
        yield hosts
    finally:
        for vm in hosts.values():
            vm.kill()  # the overlays are never booted again


def test_fleet_canary_budget_resume(
    fleet: Dict[str, HostVM],
    os_image: OsImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    pxe = signed_live_pxe(tmp_path, os_image)
    collections = build_collection(tmp_path / "collection")
    env = ansible_env(tmp_path, collections)
    env["TMPDIR"] = str(tmp_path)
    (tmp_path / "ign.j2").write_text(TEMPLATE)
    variables = {
        "convert_x2nestos": X2NESTOS,
        "convert_pxe": str(pxe),
        "convert_keyrings": [str(tmp_path / "key.asc")],
        "convert_ignition_template": str(tmp_path / "ign.j2"),
        "convert_results_dir": str(tmp_path / "results"),
        "convert_timeout": 1500,
    }
    start = time.monotonic()
    start_all(list(fleet.values()))
    a, b = fleet["a"], fleet["b"]
    print(f"both hosts up in {time.monotonic() - start:.0f}s")
    inv = inventory(tmp_path / "fleet.ini", fleet)
    b_before = debian_state(b)
    assert b_before[2] == "debian" and b.host_key in b_before[1]

    first = run(env, inv, variables, 1)
    assert first["rc"] == 2, first["log"] + a.describe()
    ra, rb = first["a"], first.get("b", {})
    assert (ra["outcome"], ra["state"]) == ("converted", "verified"), ra
    check_phases(ra)
    assert (rb["outcome"], rb["failed-phase"], rb["untouched"]) == ("failed", "plan", True), rb
    assert "kexec" in rb["reason"], rb
    assert first["summary"]["counts"] == {"converted": 1, "failed": 1}
    assert first["summary"]["hosts"]["failed"][0]["host"] == "b"
    assert "kexec" in first["summary"]["hosts"]["failed"][0]["why"]
    assert debian_state(b) == b_before  # untouched: first MiB, host key, still Debian
    check_converted(a, "a")

    # the admin fixes the cause: b gets a package source with kexec-tools (its only one, as
    # this host has no other network), and the run may install it (x2nestos --install-kexec)
    b.ssh(
        f"rm -f /etc/apt/sources.list.d/*; echo 'deb [trusted=yes] http://{MIRROR}/ ./' "
        ">/etc/apt/sources.list && apt-get update -q && ! command -v kexec"
    )
    second = run(env, inv, {**variables, "convert_install_kexec": True}, 2)
    assert second["rc"] == 0, second["log"] + b.describe()
    ra, rb = second["a"], second.get("b", {})
    assert ra["outcome"] == "skipped" and ra["conversion"]["outcome"] == "converted", ra
    assert (rb["outcome"], rb["state"], rb["untouched"]) == ("converted", "verified", False), rb
    check_phases(rb)
    assert second["summary"]["counts"] == {"converted": 1, "skipped": 1}
    check_converted(b, "b")
    check_converted(a, "a")
