"""Black-box `nestos-installer dev show|extract ...` tests on the initrd and ISO fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fixtures.initrd.gen_initrds import build_all, gzip_zeros, raw_cpio
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


# ---- hostile input: one `Error:` line, bounded time and memory ---------------------------

RSS_PROBE = (
    "import resource, subprocess, sys;"
    "p = subprocess.run(sys.argv[1:], capture_output=True, timeout=60);"
    "sys.stdout.buffer.write(b'%d %d\\n' % (p.returncode,"
    " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
    "sys.stdout.buffer.write(p.stderr)"
)


def ni_measured(*args):
    """Run the CLI as the only child of a fresh interpreter: (exit code, peak RSS KiB, stderr)."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, NI, *map(str, args)],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    head, _, stderr = out.partition(b"\n")
    rc, rss = map(int, head.split())
    return rc, rss, stderr.decode()


def one_error_line(stderr):
    assert "Traceback" not in stderr, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("Error:")] == [
        stderr.splitlines()[0]
    ], stderr
    return stderr.splitlines()[0]


def test_negative_file_size_fails_fast(initrds):
    """c_filesize "-00000E4" used to send the parser back to the same entry forever."""
    start = time.monotonic()
    p = subprocess.run(
        [NI, "dev", "show", "initrd", initrds["negative-size.img"]],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert p.returncode != 0 and time.monotonic() - start < 10
    line = one_error_line(p.stderr.decode())
    assert line == "Error: bad cpio header at offset 0: fields must be 8 hex digits"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """1 GiB of zeros in one gzip member (1 MiB on disk): bare, and after a valid archive."""
    d = tmp_path_factory.mktemp("bombs")
    zeros = d / "zeros.gz"
    zeros.write_bytes(gzip_zeros(b"", 1 << 30))
    tail = d / "tail.gz"
    tail.write_bytes(gzip_zeros(raw_cpio([("a", b"1")]), 1 << 30))
    return {"zeros": zeros, "tail": tail}


@pytest.mark.parametrize(
    "name,message",
    [
        ("zeros", "Error: bad cpio magic at offset 0"),
        ("tail", "Error: initrd decompresses to more than 512 MiB; refusing to read on"),
    ],
)
def test_gzip_bomb_bounded_memory(bombs, name, message):
    assert bombs[name].stat().st_size < 2 << 20
    start = time.monotonic()
    rc, rss_kib, stderr = ni_measured("dev", "show", "initrd", bombs[name])
    assert rc == 1 and one_error_line(stderr) == message
    assert rss_kib < 200 << 10, f"peak RSS {rss_kib} KiB"  # streamed, not inflated whole
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "args", [("show", "initrd"), ("extract", "initrd"), ("show", "iso"), ("show", "iso", "--kargs")]
)
def test_fifo_is_refused(tmp_path, args):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = subprocess.run(
        [NI, "dev", *args, fifo], capture_output=True, check=False, timeout=30, cwd=tmp_path
    )
    assert p.returncode == 2
    assert (
        one_error_line(p.stderr.decode()) == f"Error: {fifo} is not a regular file or block device"
    )


def test_non_utf8_names_shown_escaped_and_extracted_raw(initrds, tmp_path):
    p = initrds["non-utf8.img"]
    assert ni("dev", "show", "initrd", p).stdout == b"caf\\xe9/\\xff\\n.txt\n"
    listed = ni("dev", "extract", "initrd", "-v", "-C", tmp_path, p).stdout.decode()
    assert listed == f"{tmp_path}/caf\\xe9/\\xff\\n.txt\n"
    assert (tmp_path / os.fsdecode(b"caf\xe9/\xff\n.txt")).read_bytes() == b"latin-1\n"
