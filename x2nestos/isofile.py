"""Minimal read-only ISO9660 lookup (primary volume, Rock Ridge NM names) for the live ISO.

stdlib only so the zipapp needs neither pycdlib nor xorriso; every offset is bounds-checked.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple

from nestos_installer.errors import ImageFormatError, NotFound

SECTOR = 2048
MAX_DEPTH = 16


class IsoImage:
    """An opened ISO file; `find("images/pxeboot/vmlinuz")` -> (byte offset, size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f: BinaryIO = open(path, "rb")
        except OSError as e:
            raise ImageFormatError(f"opening ISO {path}") from e
        self.size = os.fstat(self._f.fileno()).st_size
        pvd = self._read(16 * SECTOR, SECTOR)
        if pvd[0:1] != b"\x01" or pvd[1:6] != b"CD001":
            self.close()
            raise ImageFormatError(f"{path} is not an ISO9660 image (no primary volume descriptor)")
        self.block = struct.unpack_from("<H", pvd, 128)[0]
        if self.block not in (512, 1024, 2048):
            raise ImageFormatError(f"{path}: unsupported logical block size {self.block}")
        self.volume_id = pvd[40:72].decode("ascii", "replace").strip()
        self._root = self._record(pvd[156:190], "root")
        self._cache: Dict[Tuple[int, int], Dict[str, Tuple[int, int, bool]]] = {}

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> IsoImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ImageFormatError(
                f"{self.path}: read of {length} bytes at {offset} is outside the image"
            )
        self._f.seek(offset)
        data = self._f.read(length)
        if len(data) != length:
            raise ImageFormatError(f"{self.path}: short read at {offset}")
        return data

    def _record(self, rec: bytes, what: str) -> Tuple[int, int, bool]:
        if len(rec) < 34:
            raise ImageFormatError(f"{self.path}: truncated directory record ({what})")
        extent = struct.unpack_from("<I", rec, 2)[0]
        size = struct.unpack_from("<I", rec, 10)[0]
        flags = rec[25]
        if flags & 0x80:
            raise ImageFormatError(f"{self.path}: multi-extent file {what} is not supported")
        if extent * self.block + size > self.size:
            raise ImageFormatError(f"{self.path}: {what} extends past the end of the image")
        return extent * self.block, size, bool(flags & 0x02)

    def _listdir(self, offset: int, size: int) -> Dict[str, Tuple[int, int, bool]]:
        key = (offset, size)
        if key in self._cache:
            return self._cache[key]
        data = self._read(offset, size)
        entries: Dict[str, Tuple[int, int, bool]] = {}
        pos = 0
        while pos < len(data):
            length = data[pos]
            if length == 0:  # records never span sectors: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            rec = data[pos:pos + length]
            if len(rec) != length or length < 34:
                raise ImageFormatError(f"{self.path}: bad directory record at {offset + pos}")
            nlen = rec[32]
            raw = rec[33:33 + nlen]
            if raw not in (b"\x00", b"\x01"):
                name = _rock_ridge_name(rec[33 + nlen + (1 - nlen % 2):]) or _iso_name(raw)
                entries[name] = self._record(rec, name)
            pos += length
        self._cache[key] = entries
        return entries

    def lookup(self, path: str) -> Optional[Tuple[int, int, bool]]:
        parts = [p for p in path.strip("/").split("/") if p]
        if len(parts) > MAX_DEPTH or any(p in (".", "..") for p in parts):
            raise ImageFormatError(f"bad ISO path {path!r}")
        cur = self._root
        for _i, part in enumerate(parts):
            if not cur[2]:
                return None
            entries = self._listdir(cur[0], cur[1])
            hit = entries.get(part)
            if hit is None:  # fall back to a case-insensitive match (8.3 names)
                folded = {k.lower(): v for k, v in entries.items()}
                hit = folded.get(part.lower())
            if hit is None:
                return None
            cur = hit
        return cur

    def find(self, path: str) -> Tuple[int, int]:
        hit = self.lookup(path)
        if hit is None or hit[2]:
            raise NotFound(f"{path} not found in ISO {self.path}")
        return hit[0], hit[1]

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        offset, size = self.find(path)
        if size > limit:
            raise ImageFormatError(f"{path} in {self.path} is too large ({size} bytes)")
        return self._read(offset, size)

    def head(self, path: str, length: int) -> bytes:
        offset, size = self.find(path)
        return self._read(offset, min(size, length))

    def extract(self, path: str, dest: Path) -> int:
        """Copy one file out to dest (created exclusively, 0644); returns its size."""
        offset, size = self.find(path)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            self._f.seek(offset)
            remaining = size
            while remaining:
                chunk = self._f.read(min(remaining, 4 << 20))
                if not chunk:
                    raise ImageFormatError(f"{self.path}: {path} is truncated")
                out.write(chunk)
                remaining -= len(chunk)
        return size

    def copy_to(self, path: str, out: BinaryIO) -> None:
        offset, size = self.find(path)
        self._f.seek(offset)
        shutil.copyfileobj(_Limited(self._f, size), out, 4 << 20)


class _Limited:
    def __init__(self, f: BinaryIO, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data


def _iso_name(raw: bytes) -> str:
    name = raw.decode("ascii", "replace").split(";", 1)[0]
    return name[:-1] if name.endswith(".") else name


def _rock_ridge_name(area: bytes) -> Optional[str]:
    """Concatenate the NM entries of a System Use area (SUSP), if any."""
    pos, parts = 0, []
    while pos + 4 <= len(area):
        sig, length = area[pos:pos + 2], area[pos + 2]
        if length < 4 or pos + length > len(area):
            break
        if sig == b"NM" and length >= 5:
            flags = area[pos + 4]
            if not flags & 0x06:  # not "." or ".."
                parts.append(area[pos + 5:pos + length].decode("utf-8", "replace"))
        pos += length
    return "".join(parts) or None
