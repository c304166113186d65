"""Black-box `nestos-installer dev show|extract ...` tests on the initrd and ISO fixtures."""

from __future__ import annotations

import json
import subprocess

import pytest

from fixtures.initrd.gen_initrds import build_all
from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.tools import NESTOS_INSTALLER

NI = NESTOS_INSTALLER
HELLOS = ["gzip/hello", "tail/hello", "uncompressed/hello", "xz/hello", "zstd/hello"]


def ni(*args, input=None, ok=True, cwd=None):
    p = subprocess.run(
        [NI, *map(str, args)], input=input, capture_output=True, cwd=cwd, check=False
    )
    assert (p.returncode == 0) == ok, (args, p.stderr.decode())
    return p


@pytest.fixture(scope="module")
def initrds(tmp_path_factory):
    require_tools("cpio", "gzip", "xz", "zstd")
    return build_all(str(tmp_path_factory.mktemp("initrd")))


def test_show_initrd(initrds):
    p = initrds["compressed.img"]
    names = ni("dev", "show", "initrd", p).stdout.decode().split()
    assert names == sorted(names) and len(names) == 10
    with open(p, "rb") as f:
        assert ni("dev", "show", "initrd", "-", input=f.read()).stdout.decode().split() == names
    assert ni("dev", "show", "initrd", p, "*hello").stdout.decode().split() == HELLOS
    assert ni("dev", "show", "initrd", p, "gzip/*", "xz/w*").stdout.decode().split() == [
        "gzip/hello",
        "gzip/world",
        "xz/world",
    ]


def test_extract_initrd(initrds, tmp_path):
    p = initrds["compressed.img"]
    ni("dev", "extract", "initrd", p, cwd=tmp_path)
    assert (tmp_path / "zstd" / "world").read_bytes() == b"WORLD\n"
    e = ni("dev", "extract", "initrd", p, cwd=tmp_path, ok=False)
    assert b"already exists; remove it or choose another name" in e.stderr
    out = tmp_path / "out"
    listed = ni("dev", "extract", "initrd", "-v", "-C", out, p, "*hello").stdout.decode().split()
    assert listed == [f"{out}/{h}" for h in HELLOS]
    assert sorted(str(x.relative_to(out)) for x in out.rglob("*") if x.is_file()) == HELLOS
    red = tmp_path / "red"
    ni("dev", "extract", "initrd", "-C", red, initrds["redundant.img"])
    assert (red / "data" / "file").read_bytes() == b"third\n"
    pad = tmp_path / "pad"
    ni("dev", "extract", "initrd", "-C", pad, initrds["padded-names.img"])
    assert (pad / "dir" / "hello").read_bytes() == b"z" * 5000


@pytest.mark.parametrize(
    "name,member", [("traversal-relative.img", "../f"), ("traversal-absolute.img", "/etc/adjtime")]
)
def test_extract_traversal(initrds, tmp_path, name, member):
    d = tmp_path / "d"
    d.mkdir()
    e = ni("dev", "extract", "initrd", "-C", d, initrds[name], ok=False)
    assert f"path {member} contains path traversal".encode() in e.stderr
    assert list(tmp_path.rglob("f")) == [] and list(d.iterdir()) == []


@pytest.mark.parametrize("layout", ["nestos", "s390x-00"])
def test_show_iso(tmp_path, layout):
    require_tools("xorriso")
    iso = build(layout, str(tmp_path))
    doc = json.loads(ni("dev", "show", "iso", iso).stdout)
    primary = doc["header"]["descriptors"][0]
    assert primary["type"] == "primary" and primary["volume_id"] == "nestos-fixture"
    assert primary["root"]["name"] == "." and primary["volume_space_size"] * 2048 <= __import__(
        "os"
    ).path.getsize(iso)
    meta = "NESTOS" if layout == "nestos" else "COREOS"
    assert f"{meta}/KARGS.JSO" in doc["records"] and "IMAGES/PXEBOOT/VMLINUZ" in doc["records"]
    if layout == "nestos":
        assert "EFI/OPENEULE/GRUB.CFG" in doc["records"]
    ign = json.loads(ni("dev", "show", "iso", "--ignition", iso).stdout)
    assert ign["length"] == 262144 and ign["offset"] % 2048 == (0 if layout == "nestos" else 1024)
    kargs = json.loads(ni("dev", "show", "iso", "--kargs", iso).stdout)
    assert kargs["length"] == (1139 if layout == "nestos" else 896)
    assert len(kargs["kargs"]) == (2 if layout == "nestos" else 1)
    assert f"{meta.lower()}.liveiso=nestos-fixture" in kargs["default"]
    e = ni("dev", "show", "iso", "--ignition", "--kargs", iso, ok=False)
    assert e.returncode == 2  # a usage error
