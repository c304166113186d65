"""Initrd cpio reader/writer, checked against GNU cpio and the generated initrd fixtures."""

from __future__ import annotations

import lzma
import os
import subprocess

import pytest

from fixtures.initrd.gen_initrds import build_all, gnu_cpio, raw_cpio
from helpers.capabilities import require_tools
from nestos_installer.errors import ImageFormatError
from nestos_installer.live.initrd import Initrd, extract, glob_match, zstd_frame_end


@pytest.fixture(scope="module")
def initrds(tmp_path_factory):
    require_tools("cpio", "gzip", "xz", "zstd")
    return build_all(str(tmp_path_factory.mktemp("initrd")))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_concatenated_compressions(initrds):
    ird = Initrd.from_bytes(read(initrds["compressed.img"]))
    kinds = ["gzip", "tail", "uncompressed", "xz", "zstd"]
    assert ird.paths() == [f"{k}/{n}" for k in kinds for n in ("hello", "world")]
    for k in kinds:
        assert ird.get(f"{k}/hello") == b"HELLO\n"
        assert ird.get(f"{k}/world") == b"WORLD\n"


def test_last_duplicate_wins(initrds):
    assert Initrd.from_bytes(read(initrds["redundant.img"])).members == {"data/file": b"third\n"}


def test_padded_names(initrds):
    ird = Initrd.from_bytes(read(initrds["padded-names.img"]))
    assert ird.members == {"dir/hello": b"z" * 5000, "dir/world": b"q" * 4500}


def test_glob_filter(initrds):
    ird = Initrd.from_bytes(read(initrds["compressed.img"]), globs=["*hello", "zstd/*"])
    assert ird.paths() == [
        "gzip/hello",
        "tail/hello",
        "uncompressed/hello",
        "xz/hello",
        "zstd/hello",
        "zstd/world",
    ]
    assert glob_match("a/b/c", ["a*c"]) and not glob_match("a/b", ["b*"])


def test_trailing_garbage_inside_compressed(initrds):
    with pytest.raises(ImageFormatError, match="trailing garbage"):
        Initrd.from_bytes(read(initrds["garbage.img"]))


@pytest.mark.parametrize("name", ["traversal-relative.img", "traversal-absolute.img"])
def test_traversal_refused_on_extract(initrds, name, tmp_path):
    ird = Initrd.from_bytes(read(initrds[name]))
    (member,) = ird.paths()
    with pytest.raises(ImageFormatError, match=f"path {member} contains path traversal"):
        extract(ird, str(tmp_path), [member])
    assert list(tmp_path.iterdir()) == []


def test_truncated_and_hostile_lengths():
    good = raw_cpio([("a", b"x" * 100)])
    with pytest.raises(ImageFormatError):
        Initrd.from_bytes(good[:150])
    # file size field claiming more data than there is
    bad = good.replace(b"%08X" % 100, b"%08X" % 0x7FFFFFFF, 1)
    with pytest.raises(ImageFormatError, match="past end"):
        Initrd.from_bytes(bad)
    with pytest.raises(ImageFormatError, match="unknown initrd format"):
        Initrd.from_bytes(b"\0\0\0\0junk")


def test_writer_directory_order_and_gnu_cpio(tmp_path):
    require_tools("cpio")
    files = ["a/b/c/d", "a/b/e", "c/f", "c/g", "d", "a/b/c/x"]
    ird = Initrd({p: p.encode() * 3 for p in files})
    cpio = ird.to_cpio()
    listing = (
        subprocess.run(["cpio", "-t", "--quiet"], input=cpio, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    assert listing == ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/x", "a/b/e", "c", "c/f", "c/g", "d"]
    verbose = (
        subprocess.run(["cpio", "-tv", "--quiet"], input=cpio, capture_output=True, check=True)
        .stdout.decode()
        .splitlines()
    )
    assert verbose[0].startswith("drwxr-xr-x") and verbose[3].startswith("-rw-------")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-i", "-d", "--quiet"], input=cpio, cwd=out, check=True)
    for p in files:
        assert (out / p).read_bytes() == p.encode() * 3


def test_xz_uses_crc32_and_roundtrips():
    ird = Initrd({"config.ign": b'{"ignition": {"version": "3.0.0"}\n'})
    data = ird.to_xz()
    assert data[:6] == b"\xfd7zXZ\x00"
    assert data[6:8] == b"\x00\x01"  # stream flags: check type 1 = CRC32
    assert lzma.decompress(data) == ird.to_cpio()
    assert Initrd.from_bytes(data + bytes(1000)).members == ird.members


def test_reader_accepts_gnu_cpio_output():
    arch = gnu_cpio({"x/y": b"1", "z": b"22"})
    assert Initrd.from_bytes(arch).members == {"x/y": b"1", "z": b"22"}


def test_zstd_frame_end(initrds):
    require_tools("zstd")
    payload = os.urandom(5000) + bytes(100000)
    frame = subprocess.run(
        ["zstd", "-q", "-c"], input=payload, capture_output=True, check=True
    ).stdout
    assert zstd_frame_end(frame + b"trailing", 0) == len(frame)
    with pytest.raises(ImageFormatError, match="truncated zstd"):
        zstd_frame_end(frame[:-3], 0)
