"""Read-only lookup of files inside the live ISO, for pulling out the PXE kernel/initramfs.

ISO9660 parsing is left to a library or a system tool, never done here: pycdlib (through
nestos_installer.live.iso9660) when it is importable, else `xorriso` or `isoinfo`-free
`xorriso -find ... report_lba`. Every offset they report is bounds-checked against the file.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Optional, Tuple

from nestos_installer import run
from nestos_installer.errors import ImageFormatError, NestosError, NotFound, ToolMissing

SECTOR = 2048
MAX_DEPTH = 16


def _pycdlib_reader() -> Any:
    """nestos_installer.live.iso9660, or None where pycdlib is missing (e.g. the zipapp).

    Imported by name so the zipapp builder does not bundle it (it needs pycdlib)."""
    try:
        return importlib.import_module("nestos_installer.live.iso9660")
    except ImportError:
        return None


class IsoImage:
    """An opened ISO file; `find("images/pxeboot/vmlinuz")` -> (byte offset, size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f: BinaryIO = open(path, "rb")
        except OSError as e:
            raise ImageFormatError(f"opening ISO {path}") from e
        self.size = os.fstat(self._f.fileno()).st_size
        pvd = self._read(16 * SECTOR, SECTOR) if self.size >= 17 * SECTOR else b""
        if pvd[0:1] != b"\x01" or pvd[1:6] != b"CD001":
            self.close()
            raise ImageFormatError(f"{path} is not an ISO9660 image (no primary volume descriptor)")
        self.volume_id = pvd[40:72].decode("ascii", "replace").strip()
        self._lib: Any = None
        mod = _pycdlib_reader()
        if mod is not None:
            try:
                self._lib = mod.IsoImage(self._f)
            except NestosError:
                self.close()
                raise
        elif not run.have_tool("xorriso"):
            self.close()
            raise ToolMissing(
                "reading a live ISO needs pycdlib (python3-pycdlib) or xorriso",
                hint="install one of them, or extract the PXE files and use --pxe DIR",
            )

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

    def lookup(self, path: str) -> Optional[Tuple[int, int, bool]]:
        """(byte offset, size, is_dir) of `path`, or None when it does not exist."""
        parts = [p for p in path.strip("/").split("/") if p]
        if len(parts) > MAX_DEPTH or any(p in (".", "..") for p in parts):
            raise ImageFormatError(f"bad ISO path {path!r}")
        if self._lib is not None:
            try:
                hit = self._lib.lookup("/".join(parts))
            except NotFound:
                return None
            found = (int(hit.offset), int(hit.length), bool(hit.is_dir))
        else:
            found_x = self._xorriso_lookup("/" + "/".join(parts))
            if found_x is None:
                return None
            found = found_x
        if found[0] < 0 or found[0] + found[1] > self.size:
            raise ImageFormatError(f"{self.path}: {path} lies outside the image")
        return found

    def _xorriso_lookup(self, path: str) -> Optional[Tuple[int, int, bool]]:
        proc = run.run(
            ["xorriso", "-indev", self.path, "-find", path, "-exec", "report_lba", "--"],
            check=False,
            reason="read the live ISO",
        )
        for line in proc.stdout.decode(errors="replace").splitlines():
            if line.startswith("File data lba:"):
                fields = [f.strip() for f in line.split(":", 1)[1].split(",", 4)]
                try:
                    lba, size = int(fields[1]), int(fields[3])
                except (IndexError, ValueError):
                    raise ImageFormatError(f"unexpected xorriso output: {line!r}") from None
                return lba * SECTOR, size, False
        return None

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
