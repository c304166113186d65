"""Compression formats told apart by magic bytes (gzip, xz, zstd, none), the stdlib codecs for
them, and the bounded one-member inflater. stdlib + `errors` only and Python 3.7-compatible: the
x2nestos zipapp bundles it. zstd needs the `zstd` program, which callers start through `run`.
"""

from __future__ import annotations

import enum
import lzma
import struct
import zlib
from typing import Callable, List, Union

from nestos_installer.errors import ImageFormatError, UsageError

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
SNIFF_LEN = 6
INPUT_CHUNK = 256 << 10


class Compression(enum.Enum):
    """A compression format, decided by the first bytes of the data (never by a file name)."""

    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"

    @classmethod
    def sniff(cls, head: bytes) -> Compression:
        """The format announced by the first bytes of a stream."""
        if head.startswith(GZIP_MAGIC):
            return cls.GZIP
        if head.startswith(XZ_MAGIC):
            return cls.XZ
        if len(head) >= 4:
            magic = int.from_bytes(head[:4], "little")
            if magic == ZSTD_MAGIC or magic in ZSTD_SKIPPABLE:
                return cls.ZSTD
        return cls.NONE

    @classmethod
    def stdlib_codecs(cls) -> List[Compression]:
        """The formats this module compresses and decompresses by itself."""
        return [cls.GZIP, cls.XZ]

    def compress(self, data: bytes) -> bytes:
        """Reproducible output: gzip level 9 with mtime 0; xz preset 9 with a CRC32 check
        (the kernel's xz decoder rejects CRC64)."""
        if self is Compression.GZIP:
            return _gzip(data)
        if self is Compression.XZ:
            return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)
        raise UsageError(f"cannot compress with {self.value} here (gzip or xz only)")

    def decompressor(self) -> Union[lzma.LZMADecompressor, zlib._Decompress]:
        """A fresh stdlib decompressor of one gzip member or one xz stream."""
        if self is Compression.GZIP:
            return zlib.decompressobj(wbits=31)
        if self is Compression.XZ:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        raise UsageError(f"no stdlib decompressor for {self.value}")


def _gzip(data: bytes) -> bytes:
    """`gzip.compress(data, 9, mtime=0)` (3.7 has no `mtime`), with OS byte 255 ("unknown") on
    every Python (3.11 and 3.12 write 3 there), so the output is the same on every host."""
    header = struct.pack("<BBBBLBB", 0x1F, 0x8B, 8, 0, 0, 2, 255)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    return header + body + struct.pack("<LL", zlib.crc32(data), len(data) & 0xFFFFFFFF)


class Inflater:
    """One gzip member or xz stream, read from `read_input` and handed out in pieces of at most
    `n` bytes (never inflated whole). After `read` returned b"", `unused` holds the input bytes
    that followed the member. Corrupt or truncated input raises ImageFormatError."""

    def __init__(
        self,
        kind: Compression,
        read_input: Callable[[int], bytes],
        pending: bytes = b"",
        chunk: int = INPUT_CHUNK,
    ) -> None:
        self.kind = kind
        self._read_input = read_input
        self._d = kind.decompressor()
        self._pending = pending
        self._chunk = chunk
        self.fed = 0  # input bytes handed to the decompressor

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused(self) -> bytes:
        return bytes(self._d.unused_data)

    def member_length(self) -> int:
        """Input bytes the member took (after `read` returned b"")."""
        return self.fed - len(self._d.unused_data)

    def read(self, n: int) -> bytes:
        idle = 0
        while not self._d.eof:
            fed = self.fed
            out = self._step(max(n, 1))
            if out:
                return out
            idle = idle + 1 if self.fed == fed else 0
            if idle > 2:  # no input taken, no output given: never spin
                raise ImageFormatError(f"{self.kind.value}: compressed stream is truncated")
        return b""

    def _input(self) -> bytes:
        data = self._pending or self._read_input(self._chunk)
        self._pending = b""
        self.fed += len(data)
        return data

    def _step(self, n: int) -> bytes:
        d = self._d
        if isinstance(d, lzma.LZMADecompressor):
            data = b""
            if d.needs_input:
                data = self._input()
                if not data:
                    raise ImageFormatError("xz: compressed stream is truncated")
            try:
                return d.decompress(data, n)
            except lzma.LZMAError as e:
                raise ImageFormatError("xz: compressed data is corrupt") from e
        data = d.unconsumed_tail or self._input()
        try:
            out = d.decompress(data, n)
        except zlib.error as e:
            raise ImageFormatError(f"gzip: compressed data is corrupt ({e})") from e
        if not data and not out and not d.eof:
            raise ImageFormatError("gzip: compressed stream is truncated")
        return out


def zstd_frame_end(data: bytes, pos: int) -> int:
    """Offset just past the zstd frame (or skippable frame) at `pos` (layout from RFC 8878)."""
    n = len(data)

    def need(k: int) -> None:
        if k > n:
            raise ImageFormatError("truncated zstd archive")

    need(pos + 8)
    magic = int.from_bytes(data[pos : pos + 4], "little")
    if magic in ZSTD_SKIPPABLE:
        end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
        need(end)
        return end
    fhd = data[pos + 4]
    fcs_flag = fhd >> 6
    single = (fhd >> 5) & 1
    checksum = (fhd >> 2) & 1
    did_size = (0, 1, 2, 4)[fhd & 3]
    fcs_size = (single, 2, 4, 8)[fcs_flag]
    p = pos + 5 + (0 if single else 1) + did_size + fcs_size
    while True:
        need(p + 3)
        (hdr,) = struct.unpack("<I", data[p : p + 3] + b"\0")
        last, btype, bsize = hdr & 1, (hdr >> 1) & 3, hdr >> 3
        if btype == 3:
            raise ImageFormatError("corrupt zstd archive")
        p += 3 + (1 if btype == 1 else bsize)
        need(p)
        if last:
            break
    p += 4 * checksum
    need(p)
    return p
