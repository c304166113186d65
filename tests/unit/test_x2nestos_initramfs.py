"""The appended archive: newc read back by GNU cpio, xz with CRC32, concatenation, and the
payload members (live Ignition, dest Ignition, installer YAML, target check)."""

from __future__ import annotations

import base64
import gzip
import json
import lzma
import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures.hostfacts.hosttree import build_host
from helpers.capabilities import require_tools
from nestos_installer import cpio
from nestos_installer.compression import Compression
from nestos_installer.errors import ConfigError, UsageError
from x2nestos import identity, initramfs, network
from x2nestos.initramfs import Member
from x2nestos.payload import (
    DestSource,
    LivePaths,
    Payload,
    dest_ignition,
    installer_config,
    parse_user_ignition,
    redacted,
    target_check_script,
)

MEMBERS = [
    Member("config.ign", b'{"ignition":{"version":"3.3.0"}}\n', 0o600),
    Member("etc/nestos/installer.d/0000-x2nestos.yaml", b"dest-device: /dev/vda\n", 0o600),
    Member("etc/nestos-firstboot-network/ens3.nmconnection", b"[connection]\n", 0o600),
    Member("usr/local/bin/check", b"#!/bin/sh\nexit 0\n", 0o700),
]


def _cpio_tv(data: bytes) -> str:
    return subprocess.run(
        ["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True
    ).stdout.decode()


@pytest.mark.parametrize("comp", Compression.stdlib_codecs())
def test_archive_read_back_by_gnu_cpio(comp: Compression) -> None:
    require_tools("cpio")
    data = initramfs.archive(MEMBERS, comp)
    if comp is Compression.XZ:
        assert data[:6] == b"\xfd7zXZ\x00"
        assert data[7] == 0x01  # stream flags: check type CRC32 (the kernel has no CRC64)
        raw = lzma.decompress(data)
    else:
        raw = gzip.decompress(data)
    listing = _cpio_tv(raw)
    lines = {ln.split()[-1]: ln.split() for ln in listing.splitlines()}
    # byte order of paths, each parent directory right before its first child
    assert list(lines) == [
        "config.ign",
        "etc",
        "etc/nestos-firstboot-network",
        "etc/nestos-firstboot-network/ens3.nmconnection",
        "etc/nestos",
        "etc/nestos/installer.d",
        "etc/nestos/installer.d/0000-x2nestos.yaml",
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/check",
    ]
    assert lines["etc"][0] == "drwxr-xr-x"
    assert lines["config.ign"][0] == "-rw-------"
    assert lines["usr/local/bin/check"][0] == "-rwx------"
    assert all(fields[2] == "root" for fields in lines.values())
    first = cpio.read_archive(raw)[0]
    assert (first.name, first.mode, first.data) == ("config.ign", 0o100600, MEMBERS[0].data)


def test_archive_extracts_with_gnu_cpio(tmp_path: Path) -> None:
    require_tools("cpio")
    raw = gzip.decompress(initramfs.archive(MEMBERS))
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=raw, cwd=tmp_path, check=True
    )
    for m in MEMBERS:
        assert (tmp_path / m.path).read_bytes() == m.data


@pytest.mark.parametrize("bad", ["/etc/x", "../x", "a/../b", "a//b", ""])
def test_bad_names_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        initramfs.newc([Member(bad, b"", 0o600)])


def test_concatenate_pads_and_keeps_order(tmp_path: Path) -> None:
    require_tools("cpio")
    a = tmp_path / "a"
    a.write_bytes(b"12345")
    b = tmp_path / "b"
    b.write_bytes(b"xyzw")
    extra = initramfs.archive(MEMBERS)
    n = initramfs.concatenate([a, b], extra, tmp_path / "out")
    out = (tmp_path / "out").read_bytes()
    assert n == len(out) == 8 + 4 + len(extra)
    assert out[:8] == b"12345\0\0\0" and out[8:12] == b"xyzw"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o600
    assert "config.ign" in _cpio_tv(gzip.decompress(out[12:]))


def _decode(res: dict) -> bytes:
    assert res["source"].startswith("data:;base64,")
    return gzip.decompress(base64.b64decode(res["source"][len("data:;base64,") :]))


def test_dest_ignition_merges_user_config_last(tmp_path: Path) -> None:
    tree = build_host(tmp_path)
    ident = identity.read_identity(tmp_path, users=True, host_keys=True, hostname=True)
    keyfiles = network.read_network(tmp_path).keyfiles
    user = parse_user_ignition(b'{"ignition":{"version":"3.4.0"},"passwd":{}}', "u.ign")
    conf = dest_ignition(DestSource(config=user), ident, keyfiles)
    assert conf["ignition"]["version"] == "3.4.0"
    assert json.loads(_decode(conf["ignition"]["config"]["merge"][0])) == user
    users = {u["name"]: u for u in conf["passwd"]["users"]}
    assert users["alice"]["groups"] == ["wheel"]
    assert tree.keys["root"] in users["root"]["sshAuthorizedKeys"]
    files = {f["path"]: f for f in conf["storage"]["files"]}
    assert _decode(files["/etc/hostname"]["contents"]) == b"convertme\n"
    assert files["/etc/ssh/ssh_host_ed25519_key"]["mode"] == 0o600
    assert b"[ipv4]" in _decode(
        files["/etc/NetworkManager/system-connections/ens3.nmconnection"]["contents"]
    )
    shown = json.dumps(redacted(conf))
    assert "PRIVATE KEY" not in shown and "redacted" in shown
    url_conf = dest_ignition(
        DestSource(url="https://h/c.ign", url_hash="sha256-" + "a" * 64), identity.Identity(), {}
    )
    assert url_conf["ignition"]["config"]["merge"] == [
        {"source": "https://h/c.ign", "verification": {"hash": "sha256-" + "a" * 64}}
    ]


@pytest.mark.parametrize("data", [b"not json", b'{"ignition":{"version":"2.2.0"}}', b"[]"])
def test_user_ignition_refused(data: bytes) -> None:
    with pytest.raises(ConfigError, match="parsing Ignition config x.ign"):
        parse_user_ignition(data, "x.ign")


def test_payload_members_and_yaml() -> None:
    inst = installer_config(
        "/dev/disk/by-id/virtio-abc",
        paths=LivePaths(),
        consoles=["ttyS0,115200n8"],
        save_partlabel=["data*"],
        append_karg=["quiet"],
    )
    p = Payload(
        {"ignition": {"version": "3.3.0"}},
        inst,
        {"e.nmconnection": "[connection]\n"},
        target_check_script("/dev/disk/by-id/virtio-abc", 1 << 30, "abc"),
    )
    members = {m.path: m for m in p.members()}
    parsed = yaml.safe_load(members["etc/nestos/installer.d/0000-x2nestos.yaml"].data)
    assert parsed == {
        "ignition-file": "/etc/nestos/dest.ign",
        "console": ["ttyS0,115200n8"],
        "append-karg": ["quiet"],
        "save-partlabel": ["data*"],
        "dest-device": "/dev/disk/by-id/virtio-abc",
    }
    assert members["etc/nestos-firstboot-network/e.nmconnection"].mode == 0o600
    live = json.loads(members["config.ign"].data)
    files = {f["path"]: f for f in live["storage"]["files"]}
    assert json.loads(_decode(files["/etc/nestos/dest.ign"]["contents"])) == p.dest
    assert files["/usr/local/bin/x2nestos-target-check"]["mode"] == 0o700
    assert live["systemd"]["units"][0]["name"] == "x2nestos-target-check.service"


def test_target_check_script_runs(tmp_path: Path) -> None:
    """The re-check is real shell: a missing device makes it refuse (and try to reboot)."""
    require_tools("sh")
    script = tmp_path / "check.sh"
    script.write_text(
        target_check_script("/nonexistent/x2n", 123, "s")
        .replace("[ $i -lt 30 ]", "[ $i -lt 0 ]")
        .replace("tee /dev/kmsg", "cat")
        .replace("systemctl --no-block reboot || reboot -f", "echo WOULD-REBOOT")
    )
    proc = subprocess.run(["sh", str(script)], check=False, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "target check failed: /nonexistent/x2n does not exist" in proc.stderr
    assert "WOULD-REBOOT" in proc.stdout


def test_combined_initrd_read_by_our_reader(tmp_path: Path) -> None:
    """The live initrd (gzip, made by GNU cpio), an uncompressed rootfs cpio and our xz
    archive, concatenated as kexec loads them, read back by installer/live/initrd.py with the
    kernel's semantics (every member unpacked in order)."""
    require_tools("cpio")
    from fixtures.hostfacts.liveartifacts import build_pxe
    from nestos_installer.live.initrd import Initrd

    files = build_pxe(tmp_path / "pxe")
    plain_rootfs = tmp_path / "rootfs.cpio"
    plain_rootfs.write_bytes(gzip.decompress(files["rootfs"].read_bytes()))
    extra = initramfs.archive(MEMBERS, Compression.XZ)
    initramfs.concatenate([files["initramfs"], plain_rootfs], extra, tmp_path / "combined")
    got = Initrd.from_bytes((tmp_path / "combined").read_bytes())
    assert got.get("etc/nestos-live-initramfs") == b"demo\n"
    assert got.get("etc/nestos-live-rootfs") == b"demo\n"
    for m in MEMBERS:
        assert got.get(m.path) == m.data


def test_keyfile_secrets_redacted_for_display() -> None:
    from x2nestos.payload import redacted_keyfile

    text = "[802-1x]\nidentity=bob\npassword=hunter2\n[wifi-security]\npsk=abc\nkey-mgmt=wpa\n"
    shown = redacted_keyfile(text)
    assert "hunter2" not in shown and "psk=<redacted>" in shown
    assert "identity=bob" in shown and "key-mgmt=wpa" in shown
