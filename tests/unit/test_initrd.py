"""Initrd cpio reader/writer, checked against GNU cpio and the generated initrd fixtures."""

from __future__ import annotations

import lzma
import os
import subprocess
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.initrd.gen_initrds import build_all, gnu_cpio, gzip_zeros, newc_header, raw_cpio
from helpers.capabilities import require_tools
from nestos_installer.compression import Compression, zstd_frame_end
from nestos_installer.errors import ImageFormatError
from nestos_installer.live.initrd import Initrd, extract, glob_match


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


# ---- hostile archives: properties and bounds ---------------------------------------------

FAST = settings(
    max_examples=200,
    deadline=3000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = ["none", "gzip", "xz", "zstd"]
files = st.dictionaries(
    st.lists(st.sampled_from(["a", "b", "etc", "caf\udce9"]), min_size=1, max_size=3).map("/".join),
    st.binary(max_size=200),
    max_size=4,
)


def _pack(members: Dict[str, bytes], kind: str) -> bytes:
    """`members` as one archive; xz at preset 0 (preset 9 costs 0.1 s to set up each time)."""
    plain = Initrd(members).to_cpio()
    if kind == "zstd":
        return subprocess.run(
            ["zstd", "-q", "-c"], input=plain, capture_output=True, check=True
        ).stdout
    if kind == "xz":
        return lzma.compress(plain, preset=0, check=lzma.CHECK_CRC32)
    return plain if kind == "none" else Compression(kind).compress(plain)


@FAST
@given(st.lists(st.tuples(files, st.sampled_from(KINDS), st.integers(0, 600)), max_size=4))
def test_concatenated_members_read_as_the_kernel_does(
    parts: List[Tuple[Dict[str, bytes], str, int]],
) -> None:
    require_tools("zstd")
    data = b""
    expected: Dict[str, bytes] = {}
    for members, kind, pad in parts:
        data += _pack(members, kind) + b"\0" * pad
        expected.update(members)  # later duplicates win
    assert Initrd.from_bytes(data).members == expected


@FAST
@given(
    st.sampled_from([b"", b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"070701"]),
    st.binary(max_size=2000),
)
def test_arbitrary_bytes_give_members_or_a_typed_error(magic: bytes, tail: bytes) -> None:
    try:
        got = Initrd.from_bytes(magic + tail, limit=1 << 20)
    except ImageFormatError as e:
        assert "\n" not in str(e).strip() and "Traceback" not in str(e)
    else:
        assert all(isinstance(v, bytes) for v in got.members.values())


@FAST
@given(files, st.sampled_from(["gzip", "xz"]), st.data())
def test_truncated_or_corrupt_compressed_members_are_typed_errors(
    members: Dict[str, bytes], kind: str, data: st.DataObject
) -> None:
    blob = bytearray(_pack(members, kind))
    cut = data.draw(st.integers(1, len(blob) - 1))
    with pytest.raises(ImageFormatError):
        Initrd.from_bytes(bytes(blob[:cut]))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= data.draw(st.integers(1, 255))
    try:
        Initrd.from_bytes(bytes(blob))
    except ImageFormatError:
        pass


def test_negative_size_fixture_fails_fast(initrds):
    with pytest.raises(ImageFormatError, match="fields must be 8 hex digits"):
        Initrd.from_bytes(read(initrds["negative-size.img"]))


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_inflating_past_the_limit_is_an_error(kind: str) -> None:
    """cpio, trailer, then 24 MiB of zeros in the same stream: stops at the 8 MiB limit."""
    require_tools("zstd")
    archive = Initrd({"a": b"1"}).to_cpio()
    zeros = 24 << 20
    if kind == "gzip":
        blob = gzip_zeros(archive, zeros)
    elif kind == "xz":
        blob = lzma.compress(archive + bytes(zeros), preset=0, check=lzma.CHECK_CRC32)
    else:
        zstd = ["zstd", "-q", "-1", "-c"]
        blob = subprocess.run(zstd, input=archive + bytes(zeros), capture_output=True, check=True)
        blob = blob.stdout
    with pytest.raises(ImageFormatError, match="decompresses to more than 8 MiB"):
        Initrd.from_bytes(blob, limit=8 << 20)
    assert Initrd.from_bytes(blob, limit=zeros + len(archive)).members == {"a": b"1"}


def test_member_larger_than_the_limit_is_refused_before_inflating() -> None:
    blob = gzip_zeros(newc_header("big", 1 << 30), 8 << 20)
    with pytest.raises(ImageFormatError, match="decompresses to more than 512 MiB"):
        Initrd.from_bytes(blob)


def test_non_utf8_names_list_and_extract(initrds, tmp_path):
    ird = Initrd.from_bytes(read(initrds["non-utf8.img"]))
    (name,) = ird.paths()
    assert os.fsencode(name) == b"caf\xe9/\xff\n.txt"
    (dest,) = extract(ird, str(tmp_path), ird.paths())
    assert os.listdir(os.fsencode(tmp_path / "caf\udce9")) == [b"\xff\n.txt"]
    assert open(dest, "rb").read() == b"latin-1\n"
    again = Initrd.from_bytes(ird.to_xz())  # written back under the same raw bytes
    assert again.members == ird.members


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "", "a\0b"])
def test_add_refuses_hostile_names(bad: str) -> None:
    with pytest.raises(ImageFormatError):
        Initrd().add(bad, b"x")
