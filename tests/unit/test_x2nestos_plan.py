"""doctor/plan/convert logic on fake roots: every refusal of issue 8 stops before anything is
loaded, and a --build-only conversion stages kernel + one combined initrd we can read back."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, GiB, build_host
from fixtures.hostfacts.liveartifacts import build_iso, build_pxe
from helpers.capabilities import require_tools
from nestos_installer import disks
from nestos_installer.errors import NestosError, UsageError
from x2nestos import preflight
from x2nestos.convert import convert
from x2nestos.network import NetworkMode
from x2nestos.plan import DEFAULT_CARRY, Carry, ConvertConfig, build_plan

IGN = LOGIN_IGN.encode()


@pytest.fixture(scope="module")
def pxe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("cpio")
    d = tmp_path_factory.mktemp("pxe")
    build_pxe(d)
    return d


def _cfg(root: Path, pxe_dir: Optional[Path], **kw: object) -> ConvertConfig:
    ign = root / "user.ign"
    ign.write_bytes(IGN)
    base = {"root": root, "pxe": pxe_dir, "insecure": True, "ignition_file": ign}
    base.update(kw)
    return ConvertConfig(**base)  # type: ignore[arg-type]


def _failed(plan) -> dict:  # type: ignore[no-untyped-def]
    return {c.name: c.detail for c in plan.checks if c.status.blocks}


def test_good_host_plan(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    plan = build_plan(_cfg(tmp_path, pxe))
    assert plan.ok, _failed(plan)
    assert plan.cmdline == (
        "ignition.firstboot ignition.platform.id=metal panic=10 console=tty0 console=ttyS0,115200n8"
    )
    assert plan.payload is not None
    assert plan.payload.installer["dest-device"] == "/dev/disk/by-id/virtio-x2n-test-disk"
    assert plan.payload.installer["console"] == ["tty0", "ttyS0,115200n8"]
    assert "ens3.nmconnection" in plan.payload.keyfiles
    assert any(n.startswith("ssh-keys: not requested") for n in plan.not_carried)
    assert not plan.kexec.use_file_load
    d = plan.to_json()
    json.dumps(d)
    assert d["kexec"]["jump"] == "systemctl kexec"


@pytest.mark.parametrize(
    "host_opts,cfg_opts,check,text",
    [
        ({"kexec_disabled": True}, {}, "kexec", "kexec_load_disabled=1"),
        ({"kexec_supported": False}, {}, "kexec", "no kexec support"),
        ({"mem_available": 40 << 20}, {}, "memory", "too little RAM"),
        ({"mem_total": 256 << 20, "mem_available": 200 << 20}, {}, "memory", "too little RAM"),
        ({"data_mount": True}, {}, "target-data", "/srv/my data"),
        ({"arch": "mips"}, {}, "architecture", "unknown host architecture"),
        ({"arch": "aarch64"}, {}, "architecture", "live kernel is x86_64"),
        ({"container": "docker"}, {}, "container", "docker container"),
        ({"uid": 1000}, {}, "root", "must run as root"),
        ({"disk_size": 4 * GiB}, {}, "target-size", "NestOS needs"),
        ({}, {"target": "/dev/vda2"}, "target", "partition of /dev/vda"),
        ({}, {"ignition_file": None}, "login", "nobody could log in"),
        ({}, {"iso": Path("/nonexistent.iso"), "pxe": None}, "artifacts", "does not exist"),
    ],
)
def test_refusals(
    tmp_path: Path, pxe: Path, host_opts: dict, cfg_opts: dict, check: str, text: str
) -> None:
    build_host(tmp_path, **host_opts)
    cfg = _cfg(tmp_path, pxe, **cfg_opts)
    plan = build_plan(cfg)
    assert not plan.ok
    assert text in _failed(plan).get(check, ""), _failed(plan)
    with pytest.raises(NestosError, match=check):
        convert(cfg, say=lambda m: None, confirm=None, stage_only=False, build_only=True)
    assert not (tmp_path / "var/lib/x2nestos/initrd-combined.img").exists()


def test_interface_naming_kargs_follow_the_network(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    cmdline = tmp_path / "proc/cmdline"
    cmdline.write_text(cmdline.read_text().strip() + " net.ifnames=0\n")
    plan = build_plan(_cfg(tmp_path, pxe, dest_kargs=("quiet",)))
    assert "net.ifnames=0" in plan.cmdline.split()
    assert plan.payload is not None
    assert plan.payload.installer["append-karg"] == ["net.ifnames=0", "quiet"]
    plan = build_plan(_cfg(tmp_path, pxe, carry=frozenset({Carry.CONSOLE})))
    assert "net.ifnames=0" not in plan.cmdline


def test_data_mount_allowed_when_saved_or_forced(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path, data_mount=True)
    assert build_plan(_cfg(tmp_path, pxe, save_partlabel=("da*",))).ok
    plan = build_plan(_cfg(tmp_path, pxe, force_unmounted_data=True))
    assert plan.ok
    assert any(c.name == "target-data" and c.status.value == "warn" for c in plan.checks)


def test_data_mounts_and_saved_partitions(tmp_path: Path) -> None:
    build_host(tmp_path, data_mount=True)
    t = disks.resolve("/dev/vda", tmp_path)
    assert preflight.data_mounts(t) == [("/dev/vda3", "/srv/my data", "xfs")]
    assert preflight.data_mounts(t, ("data",)) == []
    assert [p.name for p in preflight.saved_partitions(t, ["da*", "boot"])] == ["vda2", "vda3"]


@pytest.mark.parametrize("layout", ["plain", "whole", "lvm"])
def test_default_target_is_the_physical_disk_under_root(
    tmp_path: Path, pxe: Path, layout: str
) -> None:
    """With / on an LVM volume (CentOS/RHEL default) the target is the PV's disk, not dm-0."""
    build_host(tmp_path, layout=layout)
    plan = build_plan(_cfg(tmp_path, pxe))
    assert plan.ok, _failed(plan)
    assert plan.target is not None and plan.target.name == "vda"
    assert plan.payload is not None
    assert plan.payload.installer["dest-device"] == "/dev/disk/by-id/virtio-x2n-test-disk"


@pytest.mark.parametrize(
    "layout,found,chosen",
    [
        ("lvm2", "/dev/vda, /dev/vdb", "/dev/vdb"),  # one VG over two PVs
        ("raid1", "/dev/vda, /dev/vdb", "/dev/vda"),  # MD mirror
        ("multipath", "/dev/sda, /dev/sdb", "/dev/sda"),  # two paths of one LUN
    ],
)
def test_no_default_target_when_the_system_spans_disks(
    tmp_path: Path, pxe: Path, layout: str, found: str, chosen: str
) -> None:
    build_host(tmp_path, layout=layout)
    detail = _failed(build_plan(_cfg(tmp_path, pxe)))["target"]
    assert detail == (
        f"no target disk given and this system is on 2 disks ({found}): "
        "name the one to replace with -d"
    )
    plan = build_plan(_cfg(tmp_path, pxe, target=chosen))
    assert plan.ok, _failed(plan)
    assert plan.target is not None and plan.target.kernel_path == chosen


@pytest.mark.parametrize(
    "layout,target,text",
    [
        ("lvm", "/dev/dm-0", "/dev/dm-0 is an LVM logical volume, not a whole disk"),
        ("lvm", "/dev/vda2", "/dev/vda2 is a partition of /dev/vda, not a whole disk"),
        ("raid1", "/dev/md0", "/dev/md0 is a software RAID (md) device, not a whole disk"),
        ("multipath", "/dev/mapper/mpatha", "/dev/mapper/mpatha is a multipath device"),
    ],
)
def test_dest_device_must_be_a_whole_physical_disk(
    tmp_path: Path, pxe: Path, layout: str, target: str, text: str
) -> None:
    build_host(tmp_path, layout=layout)
    detail = _failed(build_plan(_cfg(tmp_path, pxe, target=target)))["target"]
    assert detail.startswith(text) and "\n" not in detail


def test_secure_boot_selects_file_load(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path, secure_boot=True, lockdown="integrity")
    plan = build_plan(_cfg(tmp_path, pxe))
    assert plan.ok and plan.kexec.use_file_load
    assert any("kexec_file_load" in c.detail for c in plan.checks)


def test_staging_on_tmpfs_refused(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    plan = build_plan(_cfg(tmp_path, pxe, work_dir=Path("/tmp/x2n")))
    assert "is on tmpfs" in _failed(plan)["staging"]


def test_carry_parsing_and_options() -> None:
    assert Carry.parse("all") == frozenset(Carry)
    assert Carry.parse("none") == frozenset()
    assert Carry.parse("hostname, console") == {Carry.HOSTNAME, Carry.CONSOLE}
    with pytest.raises(UsageError, match="unknown --carry item 'passwords'"):
        Carry.parse("passwords")
    with pytest.raises(UsageError, match="only one of --iso, --pxe, --stream"):
        ConvertConfig(iso=Path("a"), pxe=Path("b"))
    with pytest.raises(UsageError, match="needs --ignition-hash"):
        ConvertConfig(ignition_url="http://10.0.0.1:8080/hosts/a.ign")
    with pytest.raises(UsageError, match="invalid --ignition-hash"):
        ConvertConfig(ignition_url="https://example.com/a.ign", ignition_hash="md5-00")
    # the URLs the old shell script rejected are fine here
    for url in (
        "http://server.lan/config.ign",
        "https://example.com/nestos.ign",
        "http://10.0.0.1:8080/hosts/a.ign",
    ):
        ConvertConfig(ignition_url=url, ignition_hash="sha256-" + "0" * 64)


def test_build_only_stages_combined_initrd(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    cfg = _cfg(tmp_path, pxe, carry=frozenset(Carry))
    lines: list = []
    out = convert(cfg, say=lines.append, confirm=None, stage_only=False, build_only=True)
    assert out.kernel.read_bytes() == (pxe / "vmlinuz").read_bytes()
    blob = out.initrd.read_bytes()
    initrd, rootfs = (pxe / "initrd.img").read_bytes(), (pxe / "rootfs.img").read_bytes()
    assert blob.startswith(initrd)
    off = len(initrd) + (-len(initrd) % 4)
    assert blob[off : off + len(rootfs)] == rootfs
    off += len(rootfs) + (-len(rootfs) % 4)
    ours = gzip.decompress(blob[off:])
    names = (
        subprocess.run(["cpio", "-it", "--quiet"], input=ours, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    assert {
        "config.ign",
        "etc/nestos/dest.ign",
        "etc/nestos/installer.d/0000-x2nestos.yaml",
        "etc/nestos-firstboot-network/ens3.nmconnection",
    } <= set(names)
    assert out.initrd.stat().st_mode & 0o777 == 0o600
    assert out.initrd.parent.stat().st_mode & 0o777 == 0o700
    assert not out.loaded and any("NOT verified" in ln for ln in lines)


def test_iso_source_stages_from_iso(tmp_path: Path) -> None:
    require_tools("xorriso", "cpio")
    build_host(tmp_path / "root")
    iso = build_iso(tmp_path / "live.iso", tmp_path / "w")
    out = convert(
        _cfg(tmp_path / "root", None, iso=iso),
        say=lambda m: None,
        confirm=None,
        stage_only=False,
        build_only=True,
    )
    assert out.kernel.stat().st_size == 64 * 1024
    assert out.initrd.stat().st_size > 400


def test_fake_root_never_reaches_kexec(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    with pytest.raises(UsageError, match="inspection only"):
        convert(_cfg(tmp_path, pxe), say=lambda m: None, confirm=None, stage_only=True)


def test_live_image_generation_and_features(tmp_path: Path) -> None:
    """Pre-rename (coreos.*) images get /etc/coreos paths; features.json gates the install."""
    require_tools("xorriso", "cpio")
    build_host(tmp_path / "root")
    iso = build_iso(
        tmp_path / "old.iso",
        tmp_path / "w1",
        prefix="coreos",
        features={"installer-config": True, "live-initrd-network": True},
    )
    plan = build_plan(_cfg(tmp_path / "root", None, iso=iso))
    assert plan.ok and plan.artifacts is not None and plan.payload is not None
    assert plan.artifacts.prefix == "coreos"
    names = {m.path for m in plan.payload.members()}
    assert "etc/coreos/installer.d/0000-x2nestos.yaml" in names
    assert "etc/coreos-firstboot-network/ens3.nmconnection" in names
    assert plan.payload.installer["ignition-file"] == "/etc/coreos/dest.ign"
    assert any(c.name == "live-image" and c.status.value == "ok" for c in plan.checks)

    build_pxe(tmp_path / "pxe", features={"installer-config": False})
    plan = build_plan(_cfg(tmp_path / "root", tmp_path / "pxe"))
    assert plan.artifacts is not None and plan.artifacts.prefix == "nestos"
    assert "etc/nestos-live-initramfs" in plan.artifacts.prefix_source
    assert "does not support installer configs" in _failed(plan)["live-image"]

    plan = build_plan(
        _cfg(tmp_path / "root", None, iso=build_iso(tmp_path / "n.iso", tmp_path / "w2"))
    )
    assert any(c.name == "live-image" and c.status.value == "warn" for c in plan.checks)


def test_console_only_where_the_installer_supports_it(tmp_path: Path) -> None:
    require_tools("cpio")
    build_host(tmp_path / "root")
    build_pxe(tmp_path / "old", features={"installer-config": True})
    plan = build_plan(_cfg(tmp_path / "root", tmp_path / "old"))
    assert plan.payload is not None and "console" not in plan.payload.installer
    assert any("no `console` setting" in n for n in plan.not_carried)
    assert plan.cmdline.endswith("console=tty0 console=ttyS0,115200n8")  # live env still gets it
    build_pxe(
        tmp_path / "new",
        features={"installer-config": True, "installer-config-directives": {"console": True}},
    )
    plan = build_plan(_cfg(tmp_path / "root", tmp_path / "new"))
    assert plan.payload is not None
    assert plan.payload.installer["console"] == ["tty0", "ttyS0,115200n8"]


@pytest.mark.parametrize(
    "ign,carry,status,text",
    [
        ('{"ignition":{"version":"3.3.0"}}', DEFAULT_CARRY, "fail", "has no user with an SSH key"),
        ('{"ignition":{"version":"3.3.0"}}', frozenset(Carry), "ok", "alice"),
        (
            '{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core",'
            '"passwordHash":"$6$x$y"}]}}',
            DEFAULT_CARRY,
            "ok",
            "core",
        ),
        (
            '{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core",'
            '"sshAuthorizedKeys":[]}]}}',
            DEFAULT_CARRY,
            "fail",
            "nobody could log in",
        ),
        (
            '{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"https://h/a.ign"}]}}}',
            DEFAULT_CARRY,
            "warn",
            "not visible here",
        ),
    ],
)
def test_login_rule(
    tmp_path: Path, pxe: Path, ign: str, carry: frozenset, status: str, text: str
) -> None:
    """issue 17: someone must be able to log in: a carried key, or a key or password hash in
    the user's config; a config that pulls in others cannot be checked here (warning)."""
    build_host(tmp_path)
    cfg = _cfg(tmp_path, pxe, carry=carry)
    assert cfg.ignition_file is not None
    cfg.ignition_file.write_text(ign)
    plan = build_plan(cfg)
    login = next(c for c in plan.checks if c.name == "login")
    assert login.status.value == status and text in login.detail, login
    assert plan.ok is (status != "fail")


def test_network_dhcp_and_default_route(tmp_path: Path, pxe: Path) -> None:
    """The default route's interface must be carried unless --network dhcp."""
    build_host(tmp_path, network="ifcfg")
    bad = tmp_path / "etc/sysconfig/network-scripts/ifcfg-eth0"
    bad.write_text(bad.read_text().replace("IPADDR=10.1.2.3", "IPADDR=999.1.2.3"))
    plan = build_plan(_cfg(tmp_path, pxe))
    assert (
        "eth0 is not carried (IPADDR '999.1.2.3' is not an IP address)" in _failed(plan)["network"]
    )
    assert {"interface": "eth0", "becomes": "not carried"}.items() <= plan.to_json()["network"][
        0
    ].items()
    plan = build_plan(_cfg(tmp_path, pxe, network_mode=NetworkMode.DHCP))
    assert plan.ok and plan.payload is not None and plan.payload.keyfiles == {}
    assert [i.becomes for i in plan.interfaces] == ["dhcp"]
    plan = build_plan(_cfg(tmp_path, pxe, carry=frozenset({Carry.CONSOLE})))
    assert "network is not in --carry" in _failed(plan)["network"]
    bad.write_text(bad.read_text().replace("999.1.2.3", "10.1.2.3"))
    plan = build_plan(_cfg(tmp_path, pxe, must_carry=("eth7",)))
    assert "eth7 is not carried" in _failed(plan)["network"]


def test_user_ignition_nested_too_deeply(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    cfg = _cfg(tmp_path, pxe)
    assert cfg.ignition_file is not None
    cfg.ignition_file.write_text("[" * 100000)
    assert "nested too deeply" in _failed(build_plan(cfg))["ignition"]
    cfg.ignition_file.write_text('{"ignition": [1]}')
    assert "unsupported config version" in _failed(build_plan(cfg))["ignition"]


@pytest.mark.parametrize(
    "host_opts,failing,dest_device",
    [
        ({"uid": 1000}, "root", "/dev/disk/by-id/virtio-x2n-test-disk"),
        ({"mem_total": 256 << 20, "mem_available": 200 << 20}, "memory", None),
        ({"layout": "lvm2"}, "target", "<no usable target disk: see the target check>"),
    ],
)
def test_blocked_plan_still_shows_everything(
    tmp_path: Path, pxe: Path, host_opts: dict, failing: str, dest_device: Optional[str]
) -> None:
    """A check that blocks does not hide what convert would do: the destination Ignition, the
    installer config and the archive size are what the admin reviews while fixing it."""
    build_host(tmp_path, **host_opts)
    cfg = _cfg(tmp_path, pxe, carry=frozenset(Carry))
    d = build_plan(cfg).to_json()
    assert not d["ok"] and failing in [c["check"] for c in d["checks"] if c["status"] == "fail"]
    inst = d["installer-config"]
    assert inst["dest-device"] == (dest_device or "/dev/disk/by-id/virtio-x2n-test-disk")
    assert inst["console"] == ["tty0", "ttyS0,115200n8"]
    dest = d["destination-ignition"]
    assert {u["name"] for u in dest["passwd"]["users"]} == {"root", "alice", "carol"}
    assert "/etc/hostname" in [f["path"] for f in dest["storage"]["files"]]
    assert d["appended-archive-size"] > 0
    # and nothing of it can be staged
    with pytest.raises(NestosError, match=failing):
        convert(cfg, say=lambda m: None, confirm=None, stage_only=False, build_only=True)
    assert not (tmp_path / "var/lib/x2nestos").exists()
