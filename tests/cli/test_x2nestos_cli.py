"""Black-box x2nestos CLI on fake host roots (hidden --root): doctor --json, plan, the one-line
errors of bad input, --build-only staging; nothing here loads a kernel."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host
from fixtures.hostfacts.liveartifacts import GpgKey, build_iso, build_pxe
from helpers.capabilities import require_tools
from helpers.tools import X2NESTOS


def x2n(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [X2NESTOS, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("cpio", "xorriso")
    d = tmp_path_factory.mktemp("media")
    build_pxe(d / "pxe")
    build_iso(d / "live.iso", d / "work")
    (d / "user.ign").write_text(LOGIN_IGN)
    return d


def test_help_fits_80_columns() -> None:
    for cmd in ([], ["doctor"], ["plan"], ["convert"], ["unload"]):
        out = x2n(*cmd, "--help").stdout
        assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "--root" not in x2n("--help").stdout
    assert x2n("--version").stdout.startswith("x2nestos ")


def test_doctor_json(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path, secure_boot=True, lockdown="integrity")
    proc = x2n(
        "--root",
        tmp_path,
        "doctor",
        "--json",
        "--iso",
        media / "live.iso",
        "-i",
        media / "user.ign",
    )
    d = json.loads(proc.stdout)
    assert d["ok"] is True
    assert d["kexec"]["syscall"] == "kexec_file_load"
    assert d["kexec"]["secure-boot"] is True
    assert d["target"]["stable-path"] == "/dev/disk/by-id/virtio-x2n-test-disk"
    assert d["target"]["identity-source"] == "sysfs"
    assert d["artifacts"]["architecture"] == "x86_64"
    statuses = {c["check"]: c["status"] for c in d["checks"]}
    assert statuses["memory"] == "ok" and statuses["staging"] == "ok"


def test_doctor_human_and_failure_exit(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path, kexec_disabled=True)
    proc = x2n(
        "--root", tmp_path, "doctor", "--pxe", media / "pxe", "-i", media / "user.ign", check=False
    )
    assert proc.returncode == 1
    assert "FAIL  kexec" in proc.stdout and "NOT convertible" in proc.stdout


def test_plan_shows_everything(tmp_path: Path, media: Path) -> None:
    tree = build_host(tmp_path, data_mount=True)
    proc = x2n(
        "--root",
        tmp_path,
        "plan",
        "--json",
        "--pxe",
        media / "pxe",
        "--carry",
        "all",
        "--save-partlabel",
        "data",
        "--dest-karg",
        "quiet",
    )
    d = json.loads(proc.stdout)
    assert d["ok"]
    assert d["installer-config"]["save-partlabel"] == ["data"]
    assert d["installer-config"]["append-karg"] == ["quiet"]
    assert d["kernel-command-line"].endswith("console=tty0 console=ttyS0,115200n8")
    users = {u["name"]: u for u in d["destination-ignition"]["passwd"]["users"]}
    assert tree.keys["alice"] in users["alice"]["sshAuthorizedKeys"]
    assert "ens3.nmconnection" in d["network-keyfiles"]
    assert "bond0.nmconnection" in d["network-keyfiles"]
    nets = {i["interface"]: i for i in d["network"]}
    assert nets["ens3"]["becomes"] == "static" and "192.0.2.1" in nets["ens3"]["detail"]
    assert nets["ens4"]["becomes"] == "dhcp" and nets["ens5"]["becomes"] == "port of bond0"
    assert {"check": "network", "status": "ok", "detail": "carried: ens3: static"} in d["checks"]
    assert "PRIVATE KEY" not in proc.stdout
    human = x2n(
        "--root",
        tmp_path,
        "plan",
        "--pxe",
        media / "pxe",
        "--carry",
        "all",
        "--save-partlabel",
        "data",
    ).stdout
    for section in (
        "== kernel command line",
        "== destination Ignition",
        "== NOT carried",
        "== network keyfile ens3.nmconnection",
        "== network on NestOS",
        "partitions kept: vda3 (data)",
    ):
        assert section in human


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr.splitlines()[0]


@pytest.mark.parametrize(
    "host_opts,args,expect",
    [
        ({}, ["--iso", "{tmp}/missing.iso"], "artifacts: ISO {tmp}/missing.iso does not exist"),
        ({}, ["--iso", "{media}/nopxe.iso"], "not a NestOS live ISO with PXE files"),
        ({"mem_available": 32 << 20}, ["--pxe", "{media}/pxe"], "memory: too little RAM"),
        ({"kexec_disabled": True}, ["--pxe", "{media}/pxe"], "kexec: kexec is disabled"),
        ({"data_mount": True}, ["--pxe", "{media}/pxe"], "target-data: /dev/vda holds mounted"),
        ({"arch": "sparc64"}, ["--pxe", "{media}/pxe"], "unknown host architecture"),
        (
            {"layout": "lvm"},
            ["--pxe", "{media}/pxe", "-d", "/dev/mapper/vg-root"],
            "target: /dev/mapper/vg-root is an LVM logical volume, not a whole disk; name a "
            "physical disk under it (/dev/vda)",
        ),
        (
            {"layout": "raid1"},
            ["--pxe", "{media}/pxe"],
            "target: no target disk given and this system is on 2 disks (/dev/vda, /dev/vdb): "
            "name the one to replace with -d",
        ),
    ],
)
def test_convert_bad_input_one_line(
    tmp_path: Path, media: Path, host_opts: dict, args: List[str], expect: str
) -> None:
    if "nopxe.iso" in " ".join(args) and not (media / "nopxe.iso").exists():
        build_iso(media / "nopxe.iso", media / "work-nopxe", pxe=False)
    build_host(tmp_path / "root", **host_opts)
    argv = [a.format(tmp=tmp_path, media=media) for a in args]
    proc = x2n(
        "--root",
        tmp_path / "root",
        "convert",
        "--yes",
        "--build-only",
        "--insecure",
        "-i",
        media / "user.ign",
        *argv,
        check=False,
    )
    assert expect.format(tmp=tmp_path) in _one_error(proc)
    assert not (tmp_path / "root/var/lib/x2nestos").exists()


def test_convert_signature_failure(tmp_path: Path, media: Path) -> None:
    require_tools("gpg", "gpgv")
    build_host(tmp_path / "root")
    iso = tmp_path / "live.iso"
    iso.write_bytes((media / "live.iso").read_bytes())
    signer, stranger = (
        GpgKey.generate(tmp_path / "a", "signer"),
        GpgKey.generate(tmp_path / "b", "stranger"),
    )
    try:
        signer.sign(iso)
        base = [
            "--root",
            tmp_path / "root",
            "convert",
            "--yes",
            "--build-only",
            "--iso",
            iso,
            "-i",
            media / "user.ign",
        ]
        proc = x2n(*base, "--keyring", stranger.public, check=False)
        assert _one_error(proc) == "Error: live.iso: signed by a key that is not trusted"
        assert not (tmp_path / "root/var/lib/x2nestos").exists()
        proc = x2n(*base[:-2], "--keyring", signer.public, check=False)  # no Ignition, no keys
        assert "login: no --ignition-file" in _one_error(proc)
        proc = x2n(*base, "--keyring", signer.public)
        assert f"ISO: good signature from {signer.fingerprint}" in proc.stdout
        staged = tmp_path / "root/var/lib/x2nestos"
        assert (staged / "vmlinuz").is_file() and (staged / "initrd-combined.img").is_file()
    finally:
        signer.close()
        stranger.close()


def test_missing_signature_needs_insecure(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path / "root")
    proc = x2n(
        "--root",
        tmp_path / "root",
        "convert",
        "--yes",
        "--build-only",
        "--pxe",
        media / "pxe",
        "-i",
        media / "user.ign",
        check=False,
    )
    assert _one_error(proc).startswith("Error: no signature ")
    assert "hint: put the detached .sig next to it, or pass --insecure" in proc.stderr


def test_fake_root_refuses_kexec(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path / "root")
    proc = x2n(
        "--root",
        tmp_path / "root",
        "convert",
        "--stage-only",
        "--insecure",
        "--pxe",
        media / "pxe",
        "-i",
        media / "user.ign",
        check=False,
    )
    assert "is for inspection only" in _one_error(proc)
    proc = x2n("--root", tmp_path / "root", "unload", check=False)
    assert "is for inspection only" in _one_error(proc)


def test_usage_errors(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path / "root")
    proc = x2n(
        "--root",
        tmp_path / "root",
        "plan",
        "--iso",
        media / "live.iso",
        "--pxe",
        media / "pxe",
        check=False,
    )
    assert _one_error(proc) == "Error: give only one of --iso, --pxe, --stream"
    assert proc.returncode == 2
    proc = x2n("--root", tmp_path / "root", "plan", "--carry", "passwords", check=False)
    assert "unknown --carry item 'passwords'" in _one_error(proc)


def test_plan_lists_what_host_files_cannot_carry(tmp_path: Path, media: Path) -> None:
    """issue 19: typos and odd files in host config are listed with file and reason (never a
    traceback); the default route's interface blocks until fixed or --network dhcp."""
    build_host(tmp_path, network="ifcfg")
    scripts = tmp_path / "etc/sysconfig/network-scripts"
    (scripts / "ifcfg-eth0").write_text("DEVICE=eth0\nIPADDR=999.1.1.1\nPREFIX=16\n")
    (scripts / "ifcfg-eth1").mkdir()
    (tmp_path / "etc/netplan").mkdir(parents=True)
    (tmp_path / "etc/netplan/01.yaml").write_bytes(b"network:\n  ethernets: {\xff}\n")
    (tmp_path / "etc/passwd").write_text("root:x:\u00b2:0:root:/root:/bin/bash\n")
    args = ["--root", tmp_path, "plan", "--json", "--pxe", media / "pxe", "-i", media / "user.ign"]
    proc = x2n(*args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr == ""
    d = json.loads(proc.stdout)
    assert not d["ok"]
    assert {
        "network: eth0 in /etc/sysconfig/network-scripts/ifcfg-eth0: IPADDR '999.1.1.1' is not an "
        "IP address",
        "network: eth1 in /etc/sysconfig/network-scripts/ifcfg-eth1: not a regular file",
        "network: /etc/netplan/01.yaml: not UTF-8 (byte 23)",
    } <= set(d["not-carried"])
    failed = {c["check"]: c["detail"] for c in d["checks"] if c["status"] == "fail"}
    assert set(failed) == {"network"} and "eth0 is not carried" in failed["network"]
    proc = x2n(*args, "--network", "dhcp")
    d = json.loads(proc.stdout)
    assert d["ok"] and d["network-keyfiles"] == {}
    assert d["network"] == [
        {
            "interface": "eth0",
            "becomes": "dhcp",
            "detail": "--network dhcp",
            "from": "NestOS default",
        }
    ]
    human = x2n("--root", tmp_path, "plan", "--pxe", media / "pxe", "-i", media / "user.ign",
                check=False).stdout  # fmt: skip
    assert "== network on NestOS\n  eth0: not carried (IPADDR '999.1.1.1' is not an IP" in human


def test_deep_user_ignition_is_one_line(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path / "root")
    deep = tmp_path / "deep.ign"
    deep.write_text("[" * 100000)
    proc = x2n("--root", tmp_path / "root", "convert", "--yes", "--build-only", "--insecure",
               "--pxe", media / "pxe", "-i", deep, check=False)  # fmt: skip
    assert f"ignition: parsing Ignition config {deep}: nested too deeply" in _one_error(proc)


def _piped(*args: object, stdin: object) -> subprocess.CompletedProcess:
    kw = {"input": stdin} if isinstance(stdin, str) else {"stdin": stdin}
    return subprocess.run(
        [X2NESTOS, *map(str, args)], check=False, capture_output=True, text=True, timeout=120, **kw
    )  # type: ignore[call-overload]


def test_ignition_config_from_stdin(tmp_path: Path, media: Path) -> None:
    """`-i -`: the config piped in (as the Ansible role does, so that it never lands in a
    file) plans exactly as the same config given as a file; bad input is one line."""
    build_host(tmp_path)
    base = ["--root", tmp_path, "plan", "--json", "--pxe", media / "pxe"]
    piped = _piped(*base, "-i", "-", stdin=LOGIN_IGN)
    assert piped.returncode == 0, piped.stderr
    from_file = json.loads(x2n(*base, "-i", media / "user.ign").stdout)
    d = json.loads(piped.stdout)
    assert d["ok"] and d["destination-ignition"] == from_file["destination-ignition"]
    login = {c["check"]: c["detail"] for c in d["checks"]}["login"]
    assert login == "users who can log in: core"  # the piped config's user

    bad = _piped(*base, "-i", "-", stdin="{not json")
    failed = {c["check"]: c["detail"] for c in json.loads(bad.stdout)["checks"]}
    assert bad.returncode == 1 and bad.stderr == ""
    assert failed["ignition"] == "parsing Ignition config from stdin: not JSON", failed
    both = _piped(*base, "-i", "-", "-I", "https://example.invalid/c.ign", stdin=LOGIN_IGN)
    assert "give only one of --ignition-file, --ignition-url" in _one_error(both)
    with pty_stdin() as tty:  # a terminal is not a config: never wait for typing
        proc = _piped(*base, "-i", "-", stdin=tty)
    assert "--ignition-file -: stdin is a terminal" in _one_error(proc)


@contextlib.contextmanager
def pty_stdin() -> Iterator[int]:
    """A terminal for a child's stdin (the parent end is closed afterwards)."""
    parent, child = os.openpty()
    try:
        yield child
    finally:
        os.close(child)
        os.close(parent)
