"""Decompression by magic on real data made by the xz, gzip and zstd programs.

Covers multi-block/single-block xz (program and stdlib paths), multi-member gzip, multi-frame and
skippable-frame zstd, trailing data, truncation, corruption, EOF-exactly-once and child reaping.
"""

from __future__ import annotations

import lzma
import os
import random
import subprocess
import threading
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.capabilities import require_tools
from nestos_installer.compression import (
    GZIP_MAGIC,
    SNIFF_LEN,
    XZ_MAGIC,
    Compression,
    Inflater,
)
from nestos_installer.errors import FetchError, ImageFormatError, NestosError
from nestos_installer.pipeline.decompress import TRAILING, decompress_bytes, decompressed
from nestos_installer.pipeline.readers import (
    BUFSIZE,
    BytesReader,
    LimitReader,
    TeeReader,
    read_all,
    read_exactly,
)


def _payload() -> bytes:
    """1.5 MiB of disk-like data: random, text-like and zero blocks interleaved."""
    rng = random.Random(42)
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(500)]
    blocks = []
    for i in range(12):
        kind = i % 3
        if kind == 0:
            blocks.append(rng.randbytes(128 * 1024))
        elif kind == 1:
            text = b" ".join(rng.choice(words) for _ in range(30_000))
            blocks.append(text[: 128 * 1024].ljust(128 * 1024, b"\n"))
        else:
            blocks.append(b"\0" * 128 * 1024)
    return b"".join(blocks)


PAYLOAD = _payload()


def _cli(argv: List[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, stdout=subprocess.PIPE, check=True).stdout


def _skippable(payload: bytes, n: int = 0) -> bytes:
    return (0x184D2A50 + n).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


@pytest.fixture(scope="module")
def blobs() -> Dict[str, bytes]:
    require_tools("xz", "gzip", "zstd")
    half = len(PAYLOAD) // 2
    a, b = PAYLOAD[:half], PAYLOAD[half:]
    return {
        "xz-multiblock": _cli(["xz", "-2", "-T2", "--block-size=256KiB", "-c"], PAYLOAD),
        "xz-singleblock": _cli(["xz", "-2", "-T1", "-c"], PAYLOAD),
        "xz-concatenated-padded": _cli(["xz", "-1", "-c"], a)
        + b"\0" * 8
        + _cli(["xz", "-1", "-c"], b),
        "gzip": _cli(["gzip", "-c"], PAYLOAD),
        "gzip-multimember": _cli(["gzip", "-c"], a) + _cli(["gzip", "-1", "-c"], b),
        "zstd": _cli(["zstd", "-q", "-c"], PAYLOAD),
        "zstd-multiframe": _cli(["zstd", "-q", "-c"], a) + _cli(["zstd", "-q", "-c"], b),
        "zstd-skippable": _skippable(b"meta") + _cli(["zstd", "-q", "-c"], PAYLOAD),
        "none": PAYLOAD,
    }


def _modes(name: str) -> List[object]:
    return [True, False] if name.startswith("xz") else [None]


CASES = [
    (name, cli)
    for name in [
        "xz-multiblock",
        "xz-singleblock",
        "xz-concatenated-padded",
        "gzip",
        "gzip-multimember",
        "zstd",
        "zstd-multiframe",
        "zstd-skippable",
        "none",
    ]
    for cli in _modes(name)
]


def test_sniff_table() -> None:
    assert Compression.sniff(b"\x1f\x8b\x08\0") is Compression.GZIP
    assert Compression.sniff(b"\xfd7zXZ\0\0") is Compression.XZ
    assert Compression.sniff(b"\xfd7zXZ") is Compression.NONE  # incomplete xz magic
    assert Compression.sniff(b"\x28\xb5\x2f\xfd") is Compression.ZSTD
    for n in range(16):
        assert Compression.sniff((0x184D2A50 + n).to_bytes(4, "little")) is Compression.ZSTD
    assert Compression.sniff((0x184D2A60).to_bytes(4, "little")) is Compression.NONE
    assert Compression.sniff(b"BZh91AY&SY") is Compression.NONE  # bzip2 is not supported
    assert Compression.sniff(b"") is Compression.NONE
    assert Compression.sniff(b"\0" * 512) is Compression.NONE


@pytest.mark.parametrize("name,cli", CASES)
def test_roundtrip_reads_input_once_to_eof(blobs: Dict[str, bytes], name: str, cli: object) -> None:
    blob = blobs[name]
    seen: List[bytes] = []
    tee = TeeReader(BytesReader(blob, chunk=300_000), [seen.append])
    with decompressed(tee, use_cli=cli) as r:  # type: ignore[arg-type]
        out = bytearray()
        while True:
            chunk = r.read(BUFSIZE)
            if not chunk:
                break
            assert len(chunk) <= BUFSIZE
            out += chunk
    assert bytes(out) == PAYLOAD
    assert tee.eof
    assert b"".join(seen) == blob  # every raw byte passed the tee exactly once


@pytest.mark.parametrize("name,cli", CASES)
@pytest.mark.parametrize(
    "garbage",
    [b"x", b"garbage!", b"\0", random.Random(7).randbytes(300_000)],
    ids=["x", "word", "nul", "random-300k"],
)
def test_trailing_data_is_refused(
    blobs: Dict[str, bytes], name: str, cli: object, garbage: bytes
) -> None:
    if name == "none":
        return  # uncompressed data has no end marker; trailing bytes are just more image
    if name.startswith("xz") and garbage == b"\0":
        garbage = b"\0" * 3  # xz allows NUL padding in multiples of four
    with pytest.raises(ImageFormatError, match=TRAILING):
        decompress_bytes(blobs[name] + garbage, use_cli=cli)  # type: ignore[arg-type]


@pytest.mark.parametrize("cli", [True, False])
def test_xz_padding_multiple_of_four_is_fine(blobs: Dict[str, bytes], cli: bool) -> None:
    assert decompress_bytes(blobs["xz-singleblock"] + b"\0" * 12, use_cli=cli) == PAYLOAD


@pytest.mark.parametrize("name,cli", [c for c in CASES if c[0] != "none"])
def test_truncated_stream_is_an_error(blobs: Dict[str, bytes], name: str, cli: object) -> None:
    blob = blobs[name]
    for cut in (len(blob) // 3, len(blob) - 1):
        with pytest.raises(ImageFormatError) as info:
            decompress_bytes(blob[:cut], use_cli=cli)  # type: ignore[arg-type]
        assert TRAILING not in str(info.value)


@pytest.mark.parametrize(
    "name,cli", [c for c in CASES if c[0] in ("xz-singleblock", "gzip", "zstd")]
)
def test_corrupt_stream_is_an_error(blobs: Dict[str, bytes], name: str, cli: object) -> None:
    blob = bytearray(blobs[name])
    mid = len(blob) // 2
    blob[mid : mid + 16] = bytes(b ^ 0x5A for b in blob[mid : mid + 16])
    with pytest.raises(ImageFormatError) as info:
        decompress_bytes(bytes(blob), use_cli=cli)  # type: ignore[arg-type]
    assert TRAILING not in str(info.value)


def _xz_feeders() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-feeder")]


@pytest.mark.parametrize("name", ["xz-multiblock", "zstd"])
def test_children_reaped_when_consumer_raises(blobs: Dict[str, bytes], name: str) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="consumer failed"):
        with decompressed(BytesReader(blobs[name], chunk=65536), use_cli=True) as r:
            pids.append(r.proc.pid)  # type: ignore[attr-defined]
            read_exactly(r, 100_000)
            raise RuntimeError("consumer failed")
    assert not os.path.exists(f"/proc/{pids[0]}")  # waited for: no zombie left
    assert not _xz_feeders()


def test_consumer_must_read_to_the_end(blobs: Dict[str, bytes]) -> None:
    with pytest.raises(NestosError, match="not read to the end"):
        with decompressed(BytesReader(blobs["gzip"]), use_cli=None) as r:
            read_exactly(r, 1000)
    assert not _xz_feeders()


class FailingSource:
    """Delivers `good` bytes, then fails like a dropped download."""

    def __init__(self, data: bytes, good: int) -> None:
        self.inner = BytesReader(data, chunk=65536)
        self.left = good

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise FetchError("connection reset while downloading")
        chunk = self.inner.read(min(n if n > 0 else self.left, self.left))
        self.left -= len(chunk)
        return chunk


@pytest.mark.parametrize(
    "name,cli", [("xz-multiblock", True), ("xz-multiblock", False), ("zstd", None)]
)
def test_source_error_reaches_the_consumer(blobs: Dict[str, bytes], name: str, cli: object) -> None:
    blob = blobs[name]
    with pytest.raises(FetchError, match="connection reset"):
        with decompressed(FailingSource(blob, len(blob) // 2), use_cli=cli) as r:  # type: ignore[arg-type]
            read_all(r)
    assert not _xz_feeders()


@pytest.mark.parametrize("cli", [True, False])
def test_limit_on_top_of_decompressor(blobs: Dict[str, bytes], cli: bool) -> None:
    def err(off: int) -> Exception:
        return ImageFormatError(f"collision at offset {off}")

    with pytest.raises(ImageFormatError, match="collision at offset 1048576"):
        with decompressed(BytesReader(blobs["xz-multiblock"]), use_cli=cli) as r:
            read_all(LimitReader(r, 1 << 20, err))
    with decompressed(BytesReader(blobs["xz-multiblock"]), use_cli=cli) as r:
        assert read_all(LimitReader(r, len(PAYLOAD), err)) == PAYLOAD


@pytest.mark.parametrize(
    "make", [["xz", "-0", "-c", "-T1"], ["gzip", "-1", "-c"], ["zstd", "-q", "-c"]]
)
def test_memory_stays_flat_on_highly_compressed_zeros(make: List[str]) -> None:
    """24 MiB of zeros compress to a few KiB: every chunk handed out stays <= BUFSIZE."""
    require_tools(make[0])
    blob = _cli(make, b"\0" * (24 << 20))
    assert len(blob) < 1 << 20
    biggest = 0
    total = 0
    with decompressed(BytesReader(blob), use_cli=False) as r:
        while True:
            chunk = r.read(BUFSIZE)
            if not chunk:
                break
            biggest = max(biggest, len(chunk))
            total += len(chunk)
    assert total == 24 << 20
    assert biggest <= BUFSIZE


@pytest.mark.parametrize("chunk", [5, 13])
def test_xz_footer_found_across_tiny_chunks(blobs: Dict[str, bytes], chunk: int) -> None:
    """The xz-program path finds stream ends whatever the source's read sizes are."""
    small = _cli(["xz", "-c"], PAYLOAD[:20_000]) + b"\0" * 4 + _cli(["xz", "-c"], PAYLOAD[:100])
    with decompressed(BytesReader(small, chunk=chunk), use_cli=True) as r:
        assert read_all(r) == PAYLOAD[:20_000] + PAYLOAD[:100]
    with pytest.raises(ImageFormatError, match=TRAILING):
        with decompressed(BytesReader(small + b"junk", chunk=chunk), use_cli=True) as r:
            read_all(r)
    with pytest.raises(ImageFormatError, match="truncated"):
        with decompressed(BytesReader(small[:-7], chunk=chunk), use_cli=True) as r:
            read_all(r)


def test_xz_fixtures_have_the_intended_block_layout(
    blobs: Dict[str, bytes], tmp_path: os.PathLike[str]
) -> None:
    """Guards the premise of the xz cases: one is multi-block (parallel), one single-block."""
    counts = {}
    for name in ("xz-multiblock", "xz-singleblock", "xz-concatenated-padded"):
        path = os.path.join(tmp_path, f"{name}.xz")
        with open(path, "wb") as f:
            f.write(blobs[name])
        listing = subprocess.run(["xz", "--robot", "-l", path], stdout=subprocess.PIPE, check=True)
        totals = [ln.split("\t") for ln in listing.stdout.decode().splitlines()]
        row = [t for t in totals if t[0] == "totals"][0]
        counts[name] = (int(row[1]), int(row[2]))  # streams, blocks
    assert counts["xz-multiblock"][0] == 1 and counts["xz-multiblock"][1] > 2
    assert counts["xz-singleblock"] == (1, 1)
    assert counts["xz-concatenated-padded"][0] == 2


def test_xz_trailing_data_larger_than_the_kept_window(blobs: Dict[str, bytes]) -> None:
    """xz quits soon after the garbage starts, so the footer is still among the recent bytes
    the feeder kept, even when far more garbage than that window follows."""
    garbage = os.urandom(40 << 20)
    with pytest.raises(ImageFormatError, match=TRAILING):
        with decompressed(
            BytesReader(blobs["xz-multiblock"] + garbage, chunk=1 << 20), use_cli=True
        ) as r:
            read_all(r)


# ---- properties (hypothesis): arbitrary, truncated and bomb-like input ------------------

FAST = settings(
    max_examples=200,
    deadline=3000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAGICS = [b"", GZIP_MAGIC, XZ_MAGIC, b"\x28\xb5\x2f\xfd", (0x184D2A50).to_bytes(4, "little")]


def _compress(kind: Compression, payload: bytes) -> bytes:
    """gzip as the enum writes it; xz at preset 0 (preset 9 costs 0.1 s to set up each time)."""
    if kind is Compression.XZ:
        return lzma.compress(payload, preset=0, check=lzma.CHECK_CRC32)
    return kind.compress(payload)


@FAST
@given(st.sampled_from(MAGICS), st.binary(max_size=2000))
def test_arbitrary_bytes_give_data_or_a_typed_error(magic: bytes, tail: bytes) -> None:
    require_tools("zstd")
    try:
        out = decompress_bytes(magic + tail, use_cli=False, limit=1 << 20)
    except ImageFormatError as e:
        assert "\n" not in str(e).strip()
    else:
        assert len(out) <= 1 << 20


@FAST
@given(st.sampled_from(Compression.stdlib_codecs()), st.binary(max_size=3000), st.data())
def test_truncated_streams_are_typed_errors(
    kind: Compression, payload: bytes, data: st.DataObject
) -> None:
    blob = _compress(kind, payload)
    assert Compression.sniff(blob) is kind
    assert decompress_bytes(blob, use_cli=False) == payload
    cut = data.draw(st.integers(0, len(blob) - 1))
    if cut < SNIFF_LEN:
        return  # too short to carry the magic: read as uncompressed data
    with pytest.raises(ImageFormatError):
        decompress_bytes(blob[:cut], use_cli=False)


@FAST
@given(st.sampled_from(Compression.stdlib_codecs()), st.binary(max_size=3000), st.binary())
def test_inflater_reports_where_the_member_ended(
    kind: Compression, payload: bytes, after: bytes
) -> None:
    blob = _compress(kind, payload)
    source = BytesReader(blob + after, chunk=97)
    inflater = Inflater(kind, source.read, chunk=97)
    out = b""
    while True:
        piece = inflater.read(50)
        assert len(piece) <= 50  # never more than asked: output is bounded by the caller
        if not piece:
            break
        out += piece
    assert out == payload and inflater.member_length() == len(blob)


@pytest.mark.parametrize("kind", Compression.stdlib_codecs())
def test_output_limit_stops_a_bomb(kind: Compression) -> None:
    bomb = _compress(kind, bytes(16 << 20))
    with pytest.raises(ImageFormatError, match="more than 1048576 bytes"):
        decompress_bytes(bomb, use_cli=False, limit=1 << 20)
    assert decompress_bytes(bomb, use_cli=False, limit=16 << 20) == bytes(16 << 20)


def test_no_zstd_or_none_compressor_in_the_stdlib() -> None:
    assert [c.value for c in Compression.stdlib_codecs()] == ["gzip", "xz"]
    with pytest.raises(NestosError, match="cannot compress with zstd"):
        Compression.ZSTD.compress(b"x")
