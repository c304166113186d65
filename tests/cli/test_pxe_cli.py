"""Black-box `nestos-installer pxe ...` tests: wrap/unwrap round trips and `pxe customize`."""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess

import pytest

from fixtures.initrd.gen_initrds import (
    compress,
    gnu_cpio,
    gzip_zeros,
    negative_size_cpio,
    raw_cpio,
)
from helpers.capabilities import require_tools
from helpers.tools import NESTOS_INSTALLER

NI = NESTOS_INSTALLER
FEATURES = {
    "installer-config": True,
    "live-initrd-network": True,
    "installer-config-directives": {"console": True},
}


def ni(*args, input=None, ok=True):
    p = subprocess.run(
        [NI, *map(str, args)], input=input, capture_output=True, check=False, timeout=60
    )
    assert (p.returncode == 0) == ok, (args, p.stderr.decode())
    return p


@pytest.fixture
def live_initrd(tmp_path):
    require_tools("cpio", "gzip", "xz")
    arch = gnu_cpio(
        {
            "etc/nestos-live-initramfs": b"",
            "init": b"#!/bin/sh\n",
            "etc/nestos/features.json": json.dumps(FEATURES).encode(),
        }
    )
    p = tmp_path / "initrd.img"
    p.write_bytes(compress("gzip", arch))
    return p


def test_ignition_wrap_unwrap(tmp_path):
    cfg = tmp_path / "c.ign"
    cfg.write_bytes(b'{"ignition": {"version": "3.3.0"}}\n')
    out = tmp_path / "ign.img"
    ni("pxe", "ignition", "wrap", "-i", cfg, "-o", out)
    assert out.read_bytes()[:6] == b"\xfd7zXZ\x00"
    listing = subprocess.run(
        ["cpio", "-tv", "--quiet"],
        input=lzma.decompress(out.read_bytes()),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert listing.startswith("-rw-------") and listing.rstrip().endswith("config.ign")
    assert ni("pxe", "ignition", "unwrap", out).stdout == cfg.read_bytes()
    streamed = ni("pxe", "ignition", "wrap", input=cfg.read_bytes()).stdout
    assert streamed == out.read_bytes()
    assert ni("pxe", "ignition", "unwrap", input=streamed).stdout == cfg.read_bytes()
    assert (
        b"already exists; remove it or choose another name"
        in ni("pxe", "ignition", "wrap", "-i", cfg, "-o", out, ok=False).stderr
    )
    e = ni("pxe", "ignition", "unwrap", input=compress("gzip", gnu_cpio({"a": b"1"})), ok=False)
    assert b"couldn't find Ignition config in archive" in e.stderr


def test_network_wrap_unwrap(tmp_path):
    k = tmp_path / "eth1.nmconnection"
    k.write_bytes(b"[connection]\nid=eth1\n")
    img = ni("pxe", "network", "wrap", "-k", k).stdout
    listing = (
        subprocess.run(
            ["cpio", "-t", "--quiet"], input=lzma.decompress(img), capture_output=True, check=True
        )
        .stdout.decode()
        .split()
    )
    assert listing == [
        "etc",
        "etc/nestos-firstboot-network",
        "etc/nestos-firstboot-network/eth1.nmconnection",
    ]
    assert (
        ni("pxe", "network", "unwrap", input=img).stdout
        == b"########## eth1.nmconnection ##########\n[connection]\nid=eth1\n"
    )
    out = tmp_path / "net"
    p = tmp_path / "net.img"
    p.write_bytes(img)
    assert ni("pxe", "network", "unwrap", "-C", out, p).stdout.decode().strip() == str(
        out / "eth1.nmconnection"
    )
    assert (out / "eth1.nmconnection").read_bytes() == k.read_bytes()


def test_pxe_customize(live_initrd, tmp_path):
    dest = tmp_path / "dest.ign"
    dest.write_bytes(b'{"ignition": {"version": "3.1.0"}}')
    out = tmp_path / "out.img"
    e = ni(
        "pxe",
        "customize",
        "--dest-device",
        "/dev/vda",
        "--dest-ignition",
        dest,
        "-o",
        out,
        live_initrd,
    )
    assert b"Boot media will automatically install to /dev/vda without confirmation." in e.stderr
    assert (
        b"PXE configuration must include kernel arguments:\n"
        b"\tignition.firstboot ignition.platform.id=metal"
    ) in e.stderr
    orig = live_initrd.read_bytes()
    data = out.read_bytes()
    assert data[: len(orig)] == orig and data[len(orig) : len(orig) + 6] == b"\xfd7zXZ\x00"
    streamed = ni(
        "pxe",
        "customize",
        "--dest-device",
        "/dev/vda",
        "--dest-ignition",
        dest,
        "-o",
        "-",
        live_initrd,
    ).stdout
    assert streamed == data
    cfg = ni("pxe", "ignition", "unwrap", out).stdout
    assert json.loads(cfg)["ignition"]["version"] == "3.3.0"
    e = ni("pxe", "customize", "--dest-device", "/dev/vda", "-o", tmp_path / "o2", out, ok=False)
    assert b"input is already customized" in e.stderr
    assert (
        b"already exists; remove it or choose another name"
        in ni(
            "pxe", "customize", "--dest-device", "/dev/vda", "-o", out, live_initrd, ok=False
        ).stderr
    )


def test_pxe_customize_errors(tmp_path, live_initrd):
    plain = tmp_path / "plain.img"
    plain.write_bytes(compress("gzip", gnu_cpio({"init": b"x"})))
    e = ni("pxe", "customize", "--dest-device", "/dev/vda", "-o", tmp_path / "o", plain, ok=False)
    assert b"not a NestOS live initramfs image" in e.stderr
    nm = tmp_path / "net.yaml"
    nm.write_bytes(b"interfaces:\n- name: eth1\n  type: ethernet\n  state: up\n")
    p = subprocess.run(
        [NI, "pxe", "customize", "--network-nmstate", nm, "-o", tmp_path / "o3", live_initrd],
        capture_output=True,
        check=False,
    )
    if shutil.which("nmstatectl") is None:
        assert p.returncode != 0
        assert b"nmstate is not available; use --network-keyfile" in p.stderr
    else:
        assert p.returncode == 0, p.stderr
        assert b"eth1" in ni("pxe", "network", "unwrap", tmp_path / "o3").stdout


def test_unwrap_hostile_initrds(tmp_path):
    """A looping size field, a bomb and a FIFO: one `Error:` line each, quickly."""
    cases = {
        "neg.img": (negative_size_cpio(), "bad cpio header at offset 0"),
        "bomb.img": (
            gzip_zeros(raw_cpio([("config.ign", b"{}")]), 1 << 30),
            "initrd decompresses to more than 512 MiB",
        ),
    }
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    for what in ("ignition", "network"):
        for name, (_, message) in cases.items():
            e = ni("pxe", what, "unwrap", tmp_path / name, ok=False)
            assert e.stderr.decode().startswith(f"Error: {message}"), e.stderr
        e = ni("pxe", what, "unwrap", fifo, ok=False)
        assert e.stderr.decode() == f"Error: {fifo} is not a regular file or block device\n"


def test_network_unwrap_non_utf8_and_traversal_names(tmp_path):
    require_tools("xz")
    net = b"etc/nestos-firstboot-network/"
    img = tmp_path / "net.img"
    img.write_bytes(compress("xz", raw_cpio([(net + b"caf\xe9.nmconnection", b"[connection]\n")])))
    assert ni("pxe", "network", "unwrap", img).stdout == (
        b"########## caf\xe9.nmconnection ##########\n[connection]\n"
    )
    out = tmp_path / "out"
    listed = ni("pxe", "network", "unwrap", "-C", out, img).stdout.decode()
    assert listed == f"{out}/caf\\xe9.nmconnection\n"
    assert os.listdir(os.fsencode(out)) == [b"caf\xe9.nmconnection"]
    img.write_bytes(compress("xz", raw_cpio([(net + b"..", b"evil\n")])))
    e = ni("pxe", "network", "unwrap", "-C", out / "x", img, ok=False)
    assert e.stderr.decode().startswith("Error: path .. contains path traversal")
