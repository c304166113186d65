"""ISO9660 lookup of files in a live ISO (pycdlib), returning byte extents for in-place edits.

Imports pycdlib and `errors` only. Names resolve through Rock Ridge, then ISO9660 (upper case,
`;1` stripped), then Joliet, so `EFI/openEuler/grub.cfg` finds an 8.3 `EFI/OPENEULE/GRUB.CFG`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Iterator, List, Optional

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from nestos_installer.errors import ImageFormatError, NotFound

SECTOR = 2048


@dataclass(frozen=True)
class IsoFile:
    """A file or directory in the ISO: its byte offset in the image and its length."""

    path: str
    offset: int
    length: int
    is_dir: bool


def _iso_name(rec: Any) -> str:
    raw: bytes = rec.file_identifier()
    name = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    if name.endswith(";1"):
        name = name[:-2]
    if name.endswith("."):
        name = name[:-1]
    return name


def _rr_name(rec: Any) -> Optional[str]:
    rr = getattr(rec, "rock_ridge", None)
    if rr is None:
        return None
    try:
        name = rr.name()
    except (PyCdlibException, AttributeError):
        return None
    if isinstance(name, bytes):
        return name.decode("utf-8", errors="replace")
    return str(name) if name else None


def _joliet_name(rec: Any) -> str:
    raw: bytes = rec.file_identifier()
    name = raw.decode("utf-16-be", errors="replace")
    return name[:-2] if name.endswith(";1") else name


def _children(rec: Any) -> List[Any]:
    return [c for c in rec.children if not (c.is_dot() or c.is_dotdot())]


def _components(path: str) -> List[str]:
    out: List[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return out


class IsoImage:
    """An open ISO9660 image; every extent it returns lies inside the file."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        fp.seek(0, os.SEEK_END)
        self.size = fp.tell()
        self.descriptors = read_descriptors(fp)
        primary = next((d for d in self.descriptors if d["type"] == "primary"), None)
        if primary is None:
            raise ImageFormatError("no primary volume descriptor in ISO image")
        if int(str(primary["volume_space_size"])) * SECTOR > self.size:
            raise ImageFormatError("ISO image is incomplete")
        self.volume_id = str(primary["volume_id"])
        self._iso: Any = pycdlib.PyCdlib()
        try:
            fp.seek(0)
            self._iso.open_fp(fp)
        except Exception as e:  # noqa: BLE001 - pycdlib raises many kinds on hostile input
            raise ImageFormatError("reading ISO9660 directory tree") from e

    def _file(self, path: str, rec: Any) -> IsoFile:
        offset = int(rec.extent_location()) * SECTOR
        length = int(rec.get_data_length())
        if offset + length > self.size:
            raise ImageFormatError(f"ISO file {path} extends past end of image")
        return IsoFile(path, offset, length, bool(rec.is_dir()))

    def lookup(self, path: str) -> IsoFile:
        """Find `path` (any case); NotFound if it does not exist."""
        comps = _components(path)
        rec = self._iso.pvd.root_dir_record
        for comp in comps:
            if not rec.is_dir():
                break
            match = None
            for child in _children(rec):
                if _rr_name(child) == comp:
                    match = child
                    break
            if match is None:
                for child in _children(rec):
                    if _iso_name(child) == comp.upper():
                        match = child
                        break
            if match is None:
                rec = None
                break
            rec = match
        else:
            return self._file(path, rec)
        found = self._joliet_lookup(comps)
        if found is None:
            raise NotFound(f"{path} not found in ISO image")
        return self._file(path, found)

    def _joliet_lookup(self, comps: List[str]) -> Any:
        if not self._iso.has_joliet():
            return None
        rec = self._iso.joliet_vd.root_dir_record
        for comp in comps:
            if not rec.is_dir():
                return None
            rec = next((c for c in _children(rec) if _joliet_name(c) == comp), None)
            if rec is None:
                return None
        return rec

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except NotFound:
            return False
        return True

    def read(self, path: str, limit: int = 64 << 20) -> bytes:
        """Contents of a (small) file."""
        f = self.lookup(path)
        if f.is_dir:
            raise ImageFormatError(f"{path} is a directory in ISO image")
        if f.length > limit:
            raise ImageFormatError(f"{path} in ISO image is too large ({f.length} bytes)")
        self.fp.seek(f.offset)
        return self.fp.read(f.length)

    def listdir(self, path: str) -> List[IsoFile]:
        """Files of a directory, with ISO9660 names (upper case, `;1` stripped)."""
        d = self.lookup(path)
        rec = self._record_at(d.offset)
        base = "/".join(_components(path))
        return [self._file(f"{base}/{_iso_name(c)}", c) for c in _children(rec)]

    def _record_at(self, offset: int) -> Any:
        for _, rec in self._walk(self._iso.pvd.root_dir_record, ""):
            if rec.is_dir() and int(rec.extent_location()) * SECTOR == offset:
                return rec
        root = self._iso.pvd.root_dir_record
        if int(root.extent_location()) * SECTOR == offset:
            return root
        raise NotFound("directory not found in ISO image")

    def _walk(self, rec: Any, prefix: str) -> Iterator[Any]:
        for child in _children(rec):
            path = f"{prefix}{_iso_name(child)}"
            yield path, child
            if child.is_dir():
                yield from self._walk(child, path + "/")

    def records(self) -> List[str]:
        """All ISO9660 paths, depth first in directory order."""
        return [p for p, _ in self._walk(self._iso.pvd.root_dir_record, "")]

    def close(self) -> None:
        try:
            self._iso.close()
        except PyCdlibException:
            pass


def read_descriptors(fp: BinaryIO) -> List[Dict[str, object]]:
    """Volume descriptors from sector 16 up to the terminator, as `dev show iso` prints."""
    out: List[Dict[str, object]] = []
    sector = 16
    while True:
        fp.seek(sector * SECTOR)
        vd = fp.read(SECTOR)
        if len(vd) < SECTOR or vd[1:6] != b"CD001":
            raise ImageFormatError("Unrecognized NestOS ISO image.")
        kind = vd[0]
        if kind == 255:
            return out
        if kind == 0:
            out.append(
                {"type": "boot", "boot_system_id": _text(vd[7:39]), "boot_id": _text(vd[39:71])}
            )
        elif kind == 1:
            root = vd[156:190]
            out.append(
                {
                    "type": "primary",
                    "system_id": _text(vd[8:40]),
                    "volume_id": _text(vd[40:72]),
                    "volume_space_size": struct.unpack_from("<I", vd, 80)[0],
                    "root": {
                        "name": ".",
                        "address": struct.unpack_from("<I", root, 2)[0],
                        "length": struct.unpack_from("<I", root, 10)[0],
                    },
                }
            )
        elif kind == 2:
            out.append({"type": "supplementary"})
        else:
            out.append({"type": "unknown", "type_id": kind})
        sector += 1
        if sector > 64:
            raise ImageFormatError("no volume descriptor terminator in ISO image")


def _text(b: bytes) -> str:
    return b.decode("ascii", errors="replace").rstrip(" \0")
