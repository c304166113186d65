"""The --host probe: the real POSIX-sh script, run by real shells (dash, bash, busybox sh) over
fake host trees, collects exactly what the readers need, so the plan from the collected tree is
the plan from the host itself; hostile probe output is refused without writing outside the tree.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host, write_runtime
from fixtures.hostfacts.liveartifacts import build_pxe
from helpers.capabilities import require, require_tools
from x2nestos import hostfacts, probe
from x2nestos.plan import Carry, ConvertConfig, build_plan
from x2nestos.probe import ProbeError, Reader, Tree

SSH_CONNECTION = "10.0.2.2 40000 10.0.2.15 22"


def shells() -> List[List[str]]:
    found = [[s] for s in ("dash", "bash") if shutil.which(s)]
    if shutil.which("busybox"):
        found.append(["busybox", "sh"])
    return found


def local_execute(src: Path, shell: List[str], calls: List[str]) -> probe.Execute:
    """Runs the probe script with a real shell against the host tree `src` (the script's
    X2N_PROBE_ROOT test hook), as `sh -s "$SSH_CONNECTION" "$LOGNAME"` runs it over SSH."""

    def run(script: str, consume: Callable[[io.BufferedReader], None]) -> None:
        calls.append(script)
        env = {**os.environ, "X2N_PROBE_ROOT": str(src)}
        proc = subprocess.Popen(
            [*shell, "-s", SSH_CONNECTION, "alice"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(script.encode())
        proc.stdin.close()
        consume(proc.stdout)  # type: ignore[arg-type]
        assert proc.wait() == 0

    return run


@pytest.fixture(scope="module")
def pxe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("cpio")
    d = tmp_path_factory.mktemp("pxe")
    build_pxe(d)
    return d


def plan_json(root: Path, pxe: Path, **kw: object) -> Dict[str, object]:
    ign = pxe.parent / "user.ign"
    ign.write_text(LOGIN_IGN)
    cfg = ConvertConfig(
        root=root, pxe=pxe, ignition_file=ign, carry=frozenset(Carry), insecure=True, **kw
    )  # type: ignore[arg-type]
    d = build_plan(cfg).to_json()
    # the staging check names the free space where the plan looked: the tree on this machine
    d["checks"] = [c for c in d["checks"] if c["check"] != "staging"]
    return d


@pytest.mark.parametrize("shell", shells(), ids=lambda s: "-".join(s))
@pytest.mark.parametrize(
    "host",
    [
        {"layout": "lvm"},
        {"layout": "multipath", "network": "nm"},
        {"layout": "raid1", "network": "ifcfg"},
        {"network": "networkd", "secure_boot": True, "lockdown": "integrity"},
        {"network": "netplan", "uid": 1000},
    ],
    ids=["lvm", "multipath-nm", "raid1-ifcfg", "secureboot-networkd", "netplan-nonroot"],
)
def test_plan_from_probe_equals_plan_from_host(
    tmp_path: Path, pxe: Path, shell: List[str], host: Dict[str, object]
) -> None:
    src, dest = tmp_path / "host", tmp_path / "probed"
    build_host(src, **host)  # type: ignore[arg-type]
    calls: List[str] = []
    snap = probe.collect(local_execute(src, shell, calls), dest, "/var/lib/x2nestos")
    assert plan_json(dest, pxe) == plan_json(src, pxe)
    assert snap.login_user == "alice" and snap.ssh_client == "10.0.2.2"
    assert snap.has("sha256sum") == bool(shutil.which("sha256sum"))
    # alice's keys in /etc/ssh/keys/%u come from the second pass, named by sshd_config
    assert len(calls) == 2 and "/etc/ssh/keys/alice" in calls[1]
    # only what the readers need: no /etc/shadow, no sshd moduli, no whole /proc
    names = {str(p.relative_to(dest)) for p in dest.rglob("*")}
    assert "etc/shadow" not in names and "proc/1/maps" not in names
    assert not [p for p in dest.rglob("*") if p.is_file() and p.stat().st_mode & 0o077]


def test_session_interface_must_be_carried(tmp_path: Path, pxe: Path) -> None:
    """The interface holding the controller's SSH session (from $SSH_CONNECTION and `ip route
    get` on the host) must be carried: a VLAN that exists only at runtime is not, so the plan
    blocks and names it."""
    src, dest = tmp_path / "host", tmp_path / "probed"
    build_host(src, network="nm")
    vlan = {
        "ifindex": 9,
        "ifname": "mgmt0",
        "link_type": "ether",
        "address": "52:54:00:00:09:09",
        "linkinfo": {"info_kind": "vlan"},
        "addr_info": [{"family": "inet", "local": "10.0.2.15", "prefixlen": 24, "scope": "global"}],
    }
    write_runtime(
        src,
        [("enp1s0", "52:54:00:00:01:01", [("203.0.113.7/24", False)])],
        ("enp1s0", "203.0.113.1"),
        extra_links=[vlan],
    )
    (src / "run/x2nestos/ip-route-ssh.json").write_text(
        json.dumps([{"dst": "10.0.2.2", "dev": "mgmt0", "prefsrc": "10.0.2.15"}])
    )
    snap = probe.collect(local_execute(src, shells()[0], []), dest, "/var/lib/x2nestos")
    assert snap.ssh_interface == "mgmt0"
    from x2nestos.remote import host_config

    plan = build_plan(
        host_config(ConvertConfig(pxe=pxe, insecure=True, carry=frozenset(Carry)), snap)
    )
    net = next(c for c in plan.checks if c.name == "network")
    assert net.status.blocks and "mgmt0 is not carried" in net.detail, net.detail


def _records(text: bytes) -> List[probe.Record]:
    return list(Reader(io.BytesIO(text)).records())


def test_record_format() -> None:
    recs = _records(
        b"@F /etc/hostname\n|testhost\n@D /sys/block/vda\n@N /sys/block/vda/holders/dm-0\n"
        b"@X /proc/1/environ\n| 41 3d 31 00\n@C ip-addr.json 2\n[]\n@F /etc/empty\n@E\n"
    )
    assert [(r.kind, r.name, r.data) for r in recs] == [
        ("F", "/etc/hostname", b"testhost\n"),
        ("D", "/sys/block/vda", b""),
        ("N", "/sys/block/vda/holders/dm-0", b""),
        ("X", "/proc/1/environ", b" 41 3d 31 00\n"),
        ("C", "ip-addr.json", b"[]"),
        ("F", "/etc/empty", b""),
    ]


@pytest.mark.parametrize(
    "stream,message",
    [
        (b"@F /etc/hostname\n|x\n", "ended early"),  # the probe died: no end record
        (b"@C ip-addr.json 10\n[]\n@E\n", "lengths do not match"),
        (b"@Q /etc/hostname\n@E\n", "malformed"),
        (b"garbage\n@E\n", "malformed"),
        (b"@C tools 99999999999\nx\n@E\n", "malformed"),
        (b"@F /etc/big\n" + b"|" + b"x" * (2 << 20) + b"\n@E\n", "too long"),
        (b"@F /etc/big\n" + b"|" + b"x" * 1000 + b"\n" * 2000 + b"@E\n", "malformed"),
    ],
)
def test_malformed_output_is_refused(stream: bytes, message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        _records(stream)


def test_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "MAX_STREAM", 4096)
    stream = b"".join(b"@F /etc/f%d\n|%s\n" % (i, b"y" * 100) for i in range(100)) + b"@E\n"
    with pytest.raises(ProbeError, match="larger than 4096 bytes"):
        _records(stream)


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/etc/../../x",
        "relative/path",
        "/etc//passwd",
        "/etc/./passwd",
        "/run/x2nestos/tools",
        "/etc/new\x1bline",
        "/" + "a/" * 40 + "b",
    ],
)
def test_hostile_paths_are_refused(tmp_path: Path, path: str) -> None:
    tree = Tree(tmp_path / "tree")
    with pytest.raises(ProbeError):
        tree.add(probe.Record("F", path, b"owned\n"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_nothing_is_written_through_a_symlink(tmp_path: Path) -> None:
    """A by-id link is the only symlink the tree holds; no file is written below one, and a
    link whose target leaves dev/ is not made."""
    tree = Tree(tmp_path / "tree")
    tree.add(
        probe.Record(
            "C",
            "dev-by-id",
            b"total 0\n"
            b"lrwxrwxrwx 1 root root 9 Dec  2 00:31 virtio-disk0 -> ../../vda\n"
            b"lrwxrwxrwx 1 root root 9 Dec  2 00:31 escape -> ../../../../etc\n"
            b"lrwxrwxrwx 1 root root 9 Dec  2 00:31 evil/name -> ../../vda\n",
        )
    )
    byid = tmp_path / "tree/dev/disk/by-id"
    assert {p.name: os.readlink(p) for p in byid.iterdir()} == {"virtio-disk0": "../../vda"}
    with pytest.raises(ProbeError, match="below a non-directory"):
        tree.add(probe.Record("F", "/dev/disk/by-id/virtio-disk0/x", b"owned\n"))
    assert not (tmp_path / "tree/dev/vda").exists()


def test_cut_and_empty_files(tmp_path: Path) -> None:
    """A file larger than the limit is dropped (the readers see none, as for an unreadable
    one); an empty sysfs attribute (EIO on read) counts as absent."""
    tree = Tree(tmp_path / "tree")
    for rec in _records(
        b"@F /etc/motd\n|a\n@T /etc/motd\n@F /sys/block/vda/serial\n@F /etc/empty\n@E\n"
    ):
        tree.add(rec)
    assert not (tmp_path / "tree/etc/motd").exists()
    assert not (tmp_path / "tree/sys/block/vda/serial").exists()
    assert (tmp_path / "tree/etc/empty").read_bytes() == b""
    assert tree.notes == ["/etc/motd: larger than 1048576 bytes, not read"]


def test_long_file_is_cut_by_the_script(tmp_path: Path) -> None:
    require(bool(shutil.which("dash")), "needs dash")
    src = tmp_path / "host"
    (src / "etc").mkdir(parents=True)
    (src / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n" * 50000)  # 1.3 MB
    dest = tmp_path / "probed"
    probe.collect(local_execute(src, ["dash"], []), dest, "/var/lib/x2nestos")
    assert not (dest / "etc/passwd").exists()


@pytest.mark.parametrize(
    "release,tools,command",
    [
        ('ID=debian\nVERSION_ID="12"\n', "apt-get", "env DEBIAN_FRONTEND=noninteractive apt-get"),
        ("ID=ubuntu\nID_LIKE=debian\n", "apt-get", "env DEBIAN_FRONTEND=noninteractive apt-get"),
        ('ID="openEuler"\nVERSION_ID="20.03"\n', "dnf yum", "dnf install -y kexec-tools"),
        ('ID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n', "yum", "yum install -y"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "dnf", "dnf install -y kexec-tools"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "zypper", "zypper --non-interactive"),
        ("ID=debian\n", "", None),  # no apt-get on PATH: no guess
        ("ID=gentoo\n", "emerge", None),
    ],
)
def test_kexec_install_command(tmp_path: Path, release: str, tools: str, command: object) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(release)
    (tmp_path / "run/x2nestos").mkdir(parents=True)
    (tmp_path / "run/x2nestos/tools").write_text(tools + "\n")
    found = hostfacts.kexec_install_command(tmp_path)
    if command is None:
        assert found is None
    else:
        assert found is not None and " ".join(found).startswith(str(command))
        assert found[-1] == "kexec-tools"


def test_missing_kexec_names_the_install_command(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    (tmp_path / "etc/os-release").write_text('ID=debian\nPRETTY_NAME="Debian 12"\n')
    (tmp_path / "run/x2nestos/tools").write_text("sha256sum apt-get systemctl\n")
    plan = build_plan(ConvertConfig(root=tmp_path, pxe=pxe, insecure=True))
    check = next(c for c in plan.checks if c.name == "kexec-tools")
    assert check.status.blocks
    assert check.detail == (
        "kexec not found: install kexec-tools with `env DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y kexec-tools`, or pass --install-kexec"
    )
