"""Initrd archives: concatenated (gzip/xz/zstd/plain) newc cpio reader and xz cpio writer.

Imports `run` (zstd CLI), `outputs` and `errors` only. Every length read from an archive is
bounds-checked.
"""

from __future__ import annotations

import fnmatch
import lzma
import os
import struct
import zlib
from typing import (
    Any,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
)

from nestos_installer.errors import ImageFormatError
from nestos_installer.outputs import write_file
from nestos_installer.run import run

NEWC_MAGICS = (b"070701", b"070702")
TRAILER = "TRAILER!!!"
HEADER_LEN = 110
S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
FILE_MODE = 0o100600
DIR_MODE = 0o040755

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _align4(n: int) -> int:
    return (n + 3) & ~3


def glob_match(path: str, globs: Sequence[str]) -> bool:
    """Shell globs where `*` also matches `/`; no globs means everything matches."""
    return not globs or any(fnmatch.fnmatchcase(path, g) for g in globs)


class Initrd:
    """An ordered-by-path set of regular files, as the kernel would unpack them."""

    def __init__(self, members: Optional[Dict[str, bytes]] = None) -> None:
        self.members: Dict[str, bytes] = dict(members or {})

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, globs: Sequence[str] = ()) -> Initrd:
        """Parse a (possibly concatenated, compressed, zero-padded) initrd."""
        members: Dict[str, bytes] = {}
        for name, mode, content in iter_archives(data):
            if mode & S_IFMT == S_IFREG and glob_match(name, globs):
                # later duplicates replace earlier ones, as the kernel does
                members[name] = content
        return cls(members)

    def get(self, path: str) -> Optional[bytes]:
        return self.members.get(path)

    def paths(self) -> List[str]:
        return sorted(self.members, key=lambda p: p.encode())

    def add(self, path: str, data: bytes) -> None:
        check_member_path(path)
        self.members[path] = data

    def remove(self, path: str) -> None:
        self.members.pop(path, None)

    def remove_prefix(self, prefix: str) -> None:
        for p in [p for p in self.members if p.startswith(prefix)]:
            del self.members[p]

    def is_empty(self) -> bool:
        return not self.members

    # ---- writing ---------------------------------------------------------------------------
    def to_cpio(self) -> bytes:
        """Uncompressed newc archive: parent directories (0755) before files (0600)."""
        out = bytearray()
        prev_parents: List[str] = []
        for path in self.paths():
            parts = path.split("/")
            parents = parts[:-1]
            common = 0
            while (
                common < len(parents)
                and common < len(prev_parents)
                and parents[common] == prev_parents[common]
            ):
                common += 1
            for i in range(common, len(parents)):
                out += _entry("/".join(parents[: i + 1]), DIR_MODE, b"")
            out += _entry(path, FILE_MODE, self.members[path])
            prev_parents = parents
        out += _entry(TRAILER, 0, b"", nlink=0)
        return bytes(out)

    def to_xz(self) -> bytes:
        """xz (preset 9, CRC32 check: the kernel's decoder rejects CRC64) of `to_cpio()`."""
        return lzma.compress(
            self.to_cpio(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9
        )


def check_member_path(path: str) -> None:
    """Refuse names that would land outside the extraction directory."""
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or not path:
        raise ImageFormatError(f"path {path} contains path traversal")


def _entry(name: str, mode: int, data: bytes, nlink: int = 1) -> bytes:
    bname = name.encode() + b"\0"
    fields = [0, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(bname), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + bname
    head += b"\0" * (_align4(len(head)) - len(head))
    return head + data + b"\0" * (_align4(len(data)) - len(data))


# ---- archive iteration ---------------------------------------------------------------------


def iter_archives(data: bytes) -> Iterator[Tuple[str, int, bytes]]:
    """Yield (name, mode, content) for every entry of every archive in `data`."""
    pos = 0
    n = len(data)
    while True:
        while pos < n and data[pos] == 0:
            pos += 1
        if pos >= n:
            return
        head = data[pos : pos + 6]
        if head[:2] == GZIP_MAGIC:
            plain, pos = _gunzip(data, pos)
        elif head == XZ_MAGIC:
            plain, pos = _unxz(data, pos)
        elif head[:4] == ZSTD_MAGIC:
            plain, pos = _unzstd(data, pos)
        elif head in NEWC_MAGICS:
            end = yield from _parse_cpio(data, pos)
            pos = end
            continue
        else:
            raise ImageFormatError(f"unknown initrd format at offset {pos}")
        end = yield from _parse_cpio(plain, 0)
        if any(plain[end:]):
            raise ImageFormatError("found trailing garbage inside compressed archive")


def _parse_cpio(buf: bytes, pos: int) -> Generator[Tuple[str, int, bytes], None, int]:
    """Parse one newc archive from `pos` to its trailer; return the offset after it."""
    n = len(buf)
    base = pos  # newc padding is relative to the start of the archive

    def align(x: int) -> int:
        return base + _align4(x - base)

    while True:
        if pos + HEADER_LEN > n:
            raise ImageFormatError("truncated cpio header")
        if buf[pos : pos + 6] not in NEWC_MAGICS:
            raise ImageFormatError(f"bad cpio magic at offset {pos}")
        try:
            f = [int(buf[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError as e:
            raise ImageFormatError(f"bad cpio header at offset {pos}") from e
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + HEADER_LEN
        if namesize < 1 or name_start + namesize > n:
            raise ImageFormatError("cpio name runs past end of archive")
        raw = buf[name_start : name_start + namesize]
        # dracut-cpio pads the name field with NULs: the name ends at the first one
        name = raw.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")
        data_start = align(name_start + namesize)
        if data_start + size > n:
            raise ImageFormatError(f"cpio member {name} runs past end of archive")
        content = buf[data_start : data_start + size]
        pos = align(data_start + size)
        if name == TRAILER:
            return min(pos, n)
        yield name, mode, content


def _gunzip(data: bytes, pos: int) -> Tuple[bytes, int]:
    return _one_member(data, pos, zlib.decompressobj(wbits=31), zlib.error, "gzip")


def _unxz(data: bytes, pos: int) -> Tuple[bytes, int]:
    return _one_member(
        data, pos, lzma.LZMADecompressor(format=lzma.FORMAT_XZ), lzma.LZMAError, "xz"
    )


def _one_member(
    data: bytes, pos: int, d: Any, error: Type[Exception], what: str
) -> Tuple[bytes, int]:
    """Decompress the one compressed member at data[pos:]; return it and where it ended."""
    try:
        plain: bytes = d.decompress(data[pos:])
    except error as e:
        raise ImageFormatError(f"decompressing {what} archive") from e
    if not d.eof:
        raise ImageFormatError(f"truncated {what} archive")
    return plain, len(data) - len(d.unused_data)


def zstd_frame_end(data: bytes, pos: int) -> int:
    """Offset just past the zstd frame at `pos` (frame layout from RFC 8878)."""
    n = len(data)

    def need(k: int) -> None:
        if k > n:
            raise ImageFormatError("truncated zstd archive")

    need(pos + 5)
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


def _unzstd(data: bytes, pos: int) -> Tuple[bytes, int]:
    end = zstd_frame_end(data, pos)
    proc = run(
        ["zstd", "-d", "-c", "-q"], input=data[pos:end], reason="decompress a zstd initrd archive"
    )
    return proc.stdout, end


# ---- extraction ----------------------------------------------------------------------------


def extract(initrd: Initrd, directory: str, raw_names: Iterable[str]) -> List[str]:
    """Write each named member under `directory`, creating files exclusively."""
    written = []
    for name in raw_names:
        check_member_path(name)
        dest = os.path.join(directory, name)
        parent = os.path.dirname(dest)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # Ignition configs may hold secrets
        write_file(dest, initrd.members[name], secret=name.endswith(".ign"))
        written.append(dest)
    return written
