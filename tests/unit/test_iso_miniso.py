"""MINISO.DAT bincode encoding and unpacking, including hostile tables, arbitrary bytes and
the MINISO.DAT of real fixture ISOs (the s390x-00 one read by the directory-record reader)."""

from __future__ import annotations

import hashlib
import io
import lzma

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.fuzz import FUZZ, edits, mutate
from nestos_installer.errors import ImageFormatError
from nestos_installer.live.embed import LiveIso
from nestos_installer.live.iso9660 import IsoImage
from nestos_installer.live.miniso import Entry, MinisoData, decode, encode, unpack


def _data(full: bytes, minimal: bytes, table):
    packed = bytearray()
    pos = 0
    for e in table:
        packed += minimal[pos : e.minimal * 2048]
        pos = e.minimal * 2048 + e.length
    packed += minimal[pos:]
    return MinisoData(
        "0.20.0",
        tuple(table),
        hashlib.sha256(minimal).digest(),
        lzma.compress(bytes(packed), check=lzma.CHECK_CRC32),
    )


def test_varint_boundaries_roundtrip():
    table = (Entry(0, 250, 251), Entry(65535, 65536, 1 << 32), Entry(3, 4, 5))
    d = MinisoData("0.17.0", table, bytes(range(32)), b"\xfd7zXZ")
    raw = encode(d)
    assert raw[:8] == b"MINISO\0\0" and raw[8] == 1
    assert bytes([250, 251, 251, 0]) in raw  # 250 is one byte, 251 is 0xfb + u16
    assert decode(raw + bytes(100)) == d
    for cut in (5, 20, len(raw) - 1):
        with pytest.raises(ImageFormatError):
            decode(raw[:cut])
    with pytest.raises(ImageFormatError, match="magic"):
        decode(b"X" + raw[1:])


def test_unpack_and_digest():
    full = bytes(2048) + b"A" * 4096 + b"B" * 2048
    minimal = b"head" * 512 + b"B" * 2048 + b"mid!" * 512 + b"A" * 4096 + b"tail"
    table = [Entry(1, 3, 2048), Entry(3, 1, 4096)]
    d = _data(full, minimal, table)
    out = io.BytesIO()
    unpack(d, io.BytesIO(full), len(full), out)
    assert out.getvalue() == minimal
    bad_full = full.replace(b"B", b"C")
    with pytest.raises(ImageFormatError, match="wrong final digest: expected "):
        unpack(d, io.BytesIO(bad_full), len(bad_full), io.BytesIO())


@pytest.mark.parametrize(
    "table", [[Entry(1, 100, 2048)], [Entry(3, 1, 10), Entry(1, 1, 10)], [Entry(10**6, 1, 10)]]
)
def test_hostile_tables(table):
    full = bytes(8192)
    d = MinisoData("x", tuple(table), bytes(32), lzma.compress(bytes(4096), check=lzma.CHECK_CRC32))
    with pytest.raises(ImageFormatError):
        unpack(d, io.BytesIO(full), len(full), io.BytesIO())


def test_decompression_bomb_refused():
    """MINISO.DAT that expands to more than the full ISO is refused before it is all in memory."""
    full = bytes(8192)
    bomb = lzma.compress(bytes(1 << 20), check=lzma.CHECK_CRC32)
    with pytest.raises(ImageFormatError, match="expands to more than the ISO image"):
        unpack(MinisoData("x", (), bytes(32), bomb), io.BytesIO(full), len(full), io.BytesIO())


@pytest.mark.parametrize("layout", ["2021-12", "s390x-00", "nestos"])
def test_unpack_fixture_minimal_iso(tmp_path, layout):
    require_tools("xorriso")
    path = build(layout, str(tmp_path))
    with open(path, "rb") as fp:
        iso = LiveIso(fp)
        raw = iso.miniso_data()
        assert raw is not None
        data = decode(raw)
        assert data.table and all(e.length > 0 for e in data.table)
        out = io.BytesIO()
        unpack(data, fp, iso.size, out)  # checks the sha256 of the result
    minimal = IsoImage(io.BytesIO(out.getvalue()))
    assert minimal.reader == ("records" if layout == "s390x-00" else "pycdlib")
    assert minimal.exists("images/pxeboot/vmlinuz") and not minimal.exists(
        "images/pxeboot/rootfs.img"
    )


GOOD = encode(
    MinisoData(
        "0.20.0",
        (Entry(1, 3, 2048), Entry(3, 1, 4096)),
        bytes(32),
        lzma.compress(b"x" * 5000, check=lzma.CHECK_CRC32),
    )
)


def _decode_clean(raw: bytes):
    try:
        return decode(raw)
    except ImageFormatError:
        return None


@FUZZ
@given(raw=st.binary(max_size=512))
def test_decode_arbitrary_bytes(raw):
    _decode_clean(b"MINISO\0\0" + raw)
    _decode_clean(raw)


@FUZZ
@given(changes=st.data())
def test_mutated_miniso_unpacks_cleanly_or_refuses(changes):
    data = _decode_clean(mutate(GOOD, changes.draw(edits(len(GOOD)))))
    if data is None:
        return
    full = bytes(2048) + b"A" * 4096 + b"B" * 2048
    out = io.BytesIO()
    try:
        unpack(data, io.BytesIO(full), len(full), out)
    except ImageFormatError:
        pass
    assert len(out.getvalue()) <= 2 * len(full) + sum(e.length for e in data.table)
