"""ISO 9660 images: volume descriptors and files by path, as byte extents for in-place edits.

Standard library and `errors` only at import time (x2nestos and its zipapp use it, Python 3.7+).
pycdlib is imported lazily; where it is absent or refuses the image (s390x live ISOs name their
root `..` record 0x00), a small reader of the directory records takes over.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from nestos_installer.errors import ImageFormatError, NotFound

SECTOR = 2048
MAX_DEPTH = 32  # directory levels (ISO 9660 itself allows 8; Rock Ridge trees go deeper)
MAX_DIR_BYTES = 8 << 20  # one directory's records
MAX_RECORDS = 1 << 16  # records in one directory
MAX_TOTAL = 1 << 17  # records in a whole walk
UNRECOGNIZED = "Unrecognized NestOS ISO image."
FLAG_DIR = 0x02
FLAG_MULTI_EXTENT = 0x80
CHUNK = 4 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IsoFile:
    """A file or directory in the ISO: its byte offset in the image and its length."""

    path: str
    offset: int
    length: int
    is_dir: bool


@dataclass(frozen=True)
class Record:
    """One directory record: ISO 9660 name (upper case, `;1` and a final `.` stripped), Rock
    Ridge name if any, extent (sector) and data length."""

    name: str
    rr_name: Optional[str]
    extent: int
    length: int
    is_dir: bool
    multi_extent: bool = False
    ref: Any = field(default=None, compare=False, repr=False)  # the pycdlib record


def iso_name(raw: bytes) -> str:
    name = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    if name.endswith(";1"):
        name = name[:-2]
    if name.endswith("."):
        name = name[:-1]
    return name


def path_components(path: str) -> List[str]:
    """`a/./b/../c` -> [a, c]; `..` stops at the root, as upstream resolves it."""
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


# ---- the directory-record reader -------------------------------------------------------------
def rock_ridge_name(sua: bytes) -> Optional[str]:
    """The Rock Ridge NM name in a record's system use area (no continuation areas)."""
    parts: List[bytes] = []
    pos = 0
    while pos + 4 <= len(sua):
        sig, length = sua[pos : pos + 2], sua[pos + 2]
        if length < 4 or pos + length > len(sua) or sig == b"ST":
            break
        if sig == b"NM" and length >= 5:
            flags = sua[pos + 4]
            if flags & 0x06:  # CURRENT / PARENT
                return None
            parts.append(sua[pos + 5 : pos + length])
            if not flags & 0x01:  # no CONTINUE
                break
        pos += length
    if not parts:
        return None
    return b"".join(parts).decode("utf-8", errors="replace")


def _one_record(data: bytes, pos: int) -> Tuple[int, Optional[Record]]:
    """(record length, record or None for `.`/`..`) of the record at data[pos]."""
    length = data[pos]
    if length < 34 or pos + length > len(data):
        raise ImageFormatError(f"bad directory record length {length} at +{pos}")
    name_len = data[pos + 32]
    if name_len == 0 or 33 + name_len > length:
        raise ImageFormatError(f"bad file identifier length {name_len} at +{pos}")
    raw = data[pos + 33 : pos + 33 + name_len]
    if name_len == 1 and raw[0] in (0, 1):
        return length, None  # `.` or `..`: s390x ISOs name their root `..` 0x00, like `.`
    sua = data[pos + 33 + name_len + (1 - name_len % 2) : pos + length]
    extent, size = (
        struct.unpack_from("<I", data, pos + 2)[0],
        struct.unpack_from("<I", data, pos + 10)[0],
    )
    flags = data[pos + 25]
    rec = Record(
        iso_name(raw),
        rock_ridge_name(sua),
        extent,
        size,
        bool(flags & FLAG_DIR),
        bool(flags & FLAG_MULTI_EXTENT),
    )
    return length, rec


def parse_directory(data: bytes) -> List[Record]:
    """The records of one directory extent, `.` and `..` left out."""
    out: List[Record] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # records do not cross sectors: the rest of this one is padding
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        length, rec = _one_record(data, pos)
        pos += length
        if rec is not None:
            out.append(rec)
            if len(out) > MAX_RECORDS:
                raise ImageFormatError(f"directory has more than {MAX_RECORDS} records")
    return out


class _Tree:
    """A directory tree: its root, a directory's children, Joliet lookup where there is one."""

    reader = ""

    def root(self) -> Record:
        raise NotImplementedError

    def children(self, rec: Record) -> List[Record]:
        raise NotImplementedError

    def joliet(self, comps: Sequence[str]) -> Optional[Record]:
        return None

    def close(self) -> None:
        pass


class _RecordTree(_Tree):
    """The directory tree read straight from the records, every extent checked."""

    reader = "records"

    def __init__(self, fp: BinaryIO, size: int, root: Tuple[int, int]) -> None:
        self.fp, self.size = fp, size
        self._root = Record(".", None, root[0], root[1], True)
        self._dirs: Dict[Tuple[int, int], List[Record]] = {}
        self.children(self._root)

    def root(self) -> Record:
        return self._root

    def children(self, rec: Record) -> List[Record]:
        key = (rec.extent, rec.length)
        if key not in self._dirs:
            if rec.length > MAX_DIR_BYTES:
                raise ImageFormatError(f"ISO directory {rec.name} is too large ({rec.length})")
            data = _read_extent(self.fp, self.size, rec.extent * SECTOR, rec.length, rec.name)
            try:
                self._dirs[key] = parse_directory(data)
            except ImageFormatError as e:
                raise ImageFormatError(f"reading ISO directory {rec.name}") from e
        return self._dirs[key]

    def close(self) -> None:
        self._dirs.clear()


def _read_extent(fp: BinaryIO, size: int, offset: int, length: int, what: str) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ImageFormatError(f"ISO {what} at {offset}+{length} extends past end of image")
    fp.seek(offset)
    data = fp.read(length)
    if len(data) != length:
        raise ImageFormatError(f"short read of ISO {what} at {offset}")
    return data


# ---- pycdlib ------------------------------------------------------------------------------------
def _pycdlib_record(rec: Any) -> Record:
    rr = None
    rock = getattr(rec, "rock_ridge", None)
    if rock is not None:
        try:
            name = rock.name()
        except Exception:  # noqa: BLE001 - pycdlib raises its own kinds; no name then
            name = None
        if isinstance(name, bytes):
            rr = name.decode("utf-8", errors="replace")
        elif name:
            rr = str(name)
    return Record(
        iso_name(rec.file_identifier()),
        rr or None,
        int(rec.extent_location()),
        int(rec.get_data_length()),
        bool(rec.is_dir()),
        ref=rec,
    )


class _PycdlibTree(_Tree):
    """The directory tree as pycdlib parsed it (Rock Ridge, ISO 9660 and Joliet names)."""

    reader = "pycdlib"

    def __init__(self, lib: Any, fp: BinaryIO) -> None:
        self._iso: Any = lib.PyCdlib()
        fp.seek(0)
        self._iso.open_fp(fp)

    def root(self) -> Record:
        return _pycdlib_record(self._iso.pvd.root_dir_record)

    def children(self, rec: Record) -> List[Record]:
        return [_pycdlib_record(c) for c in rec.ref.children if not (c.is_dot() or c.is_dotdot())]

    def joliet(self, comps: Sequence[str]) -> Optional[Record]:
        if not self._iso.has_joliet():
            return None
        rec = self._iso.joliet_vd.root_dir_record
        for comp in comps:
            if not rec.is_dir():
                return None
            kids = [c for c in rec.children if not (c.is_dot() or c.is_dotdot())]
            rec = next((c for c in kids if _joliet_name(c) == comp), None)
            if rec is None:
                return None
        return _pycdlib_record(rec)

    def close(self) -> None:
        try:
            self._iso.close()
        except Exception:  # noqa: BLE001, S110 - closing a half-read image: nothing to report
            pass


def _joliet_name(rec: Any) -> str:
    raw: bytes = rec.file_identifier()
    name = raw.decode("utf-16-be", errors="replace")
    return name[:-2] if name.endswith(";1") else name


def _import_pycdlib() -> Any:
    try:
        import pycdlib
    except ImportError:
        return None
    return pycdlib


def _open_tree(fp: BinaryIO, size: int, root: Tuple[int, int], use_pycdlib: bool) -> _Tree:
    """pycdlib where it is importable and reads the image; else the record reader."""
    lib = _import_pycdlib() if use_pycdlib else None
    if lib is not None:
        try:
            return _PycdlibTree(lib, fp)
        except Exception as e:  # noqa: BLE001 - pycdlib raises many kinds on odd input
            log.debug("pycdlib refused the image (%s); reading the records directly", e)
    try:
        return _RecordTree(fp, size, root)
    except ImageFormatError as e:
        raise ImageFormatError("reading ISO9660 directory tree") from e


# ---- the image ---------------------------------------------------------------------------------
class IsoImage:
    """An open ISO 9660 image; every extent it returns lies inside the file.

    Names resolve through Rock Ridge, then ISO 9660 (upper case, `;1` stripped), then Joliet
    (pycdlib only), so `EFI/openEuler/grub.cfg` finds an 8.3 `EFI/OPENEULE/GRUB.CFG`.
    """

    def __init__(self, fp: BinaryIO, name: Optional[str] = None, *, pycdlib: bool = True) -> None:
        self.fp = fp
        self.name = name
        self._owns_fp = False
        fp.seek(0, os.SEEK_END)
        self.size = fp.tell()
        self.descriptors = read_descriptors(fp, name)
        primary = next((d for d in self.descriptors if d["type"] == "primary"), None)
        if primary is None:
            raise ImageFormatError("no primary volume descriptor in ISO image")
        if int(str(primary["volume_space_size"])) * SECTOR > self.size:
            raise ImageFormatError("ISO image is incomplete")
        self.volume_id = str(primary["volume_id"])
        root: Dict[str, int] = primary["root"]  # type: ignore[assignment]
        self._tree = _open_tree(fp, self.size, (root["address"], root["length"]), pycdlib)
        self.reader: str = self._tree.reader

    @classmethod
    def open(cls, path: Union[str, os.PathLike[str]]) -> IsoImage:
        """Open the file at `path`; the image closes it (use as a context manager)."""
        try:
            fp = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise ImageFormatError(f"opening ISO {path}") from e
        try:
            img = cls(fp, str(path))
        except BaseException:
            fp.close()
            raise
        img._owns_fp = True
        return img

    def __enter__(self) -> IsoImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tree.close()
        if self._owns_fp:
            self.fp.close()

    # ---- lookups --------------------------------------------------------------------------
    def _find(self, comps: List[str]) -> Optional[Record]:
        rec = self._tree.root()
        seen = {rec.extent}
        for comp in comps:
            if not rec.is_dir:
                return None
            kids = self._tree.children(rec)
            match = next((c for c in kids if c.rr_name == comp), None)
            if match is None:
                match = next((c for c in kids if c.name == comp.upper()), None)
            if match is None:
                return None
            if match.is_dir and match.extent in seen:
                raise ImageFormatError(f"ISO directory {comp} loops back to a parent")
            seen.add(match.extent)
            rec = match
        return rec

    def _file(self, path: str, rec: Record) -> IsoFile:
        if rec.multi_extent:
            raise ImageFormatError(f"ISO file {path} has several extents; not supported")
        offset = rec.extent * SECTOR
        if offset + rec.length > self.size:
            raise ImageFormatError(f"ISO file {path} extends past end of image")
        return IsoFile(path, offset, rec.length, rec.is_dir)

    def get(self, path: str) -> Optional[IsoFile]:
        """`path` (any case), or None when it does not exist."""
        comps = path_components(path)
        if len(comps) > MAX_DEPTH:
            return None
        rec = self._find(comps)
        if rec is None:
            rec = self._tree.joliet(comps)
        return None if rec is None else self._file(path, rec)

    def lookup(self, path: str) -> IsoFile:
        """Find `path` (any case); NotFound if it does not exist."""
        found = self.get(path)
        if found is None:
            raise NotFound(f"{path} not found in ISO image")
        return found

    def exists(self, path: str) -> bool:
        return self.get(path) is not None

    # ---- contents ---------------------------------------------------------------------------
    def read(self, path: str, limit: int = 64 << 20) -> bytes:
        """Contents of a (small) file."""
        f = self.lookup(path)
        if f.is_dir:
            raise ImageFormatError(f"{path} is a directory in ISO image")
        if f.length > limit:
            raise ImageFormatError(f"{path} in ISO image is too large ({f.length} bytes)")
        return _read_extent(self.fp, self.size, f.offset, f.length, path)

    def head(self, path: str, length: int) -> bytes:
        """The first `length` bytes of a file (fewer if it is shorter)."""
        f = self.lookup(path)
        return _read_extent(self.fp, self.size, f.offset, min(f.length, length), path)

    def copy_file(self, f: IsoFile, out: BinaryIO) -> None:
        """Stream the contents of `f` (from lookup or listdir) to `out`."""
        self.fp.seek(f.offset)
        left = f.length
        while left > 0:
            buf = self.fp.read(min(CHUNK, left))
            if not buf:
                raise ImageFormatError(f"ISO image shrank while copying {f.path}")
            out.write(buf)
            left -= len(buf)

    def copy_to(self, path: str, out: BinaryIO) -> None:
        self.copy_file(self.lookup(path), out)

    def listdir(self, path: str) -> List[IsoFile]:
        """Files of a directory, with ISO9660 names (upper case, `;1` stripped)."""
        comps = path_components(path)
        rec = self._find(comps) if len(comps) <= MAX_DEPTH else None
        if rec is None or not rec.is_dir:
            raise NotFound(f"directory {path} not found in ISO image")
        base = "/".join(comps)
        return [self._file(f"{base}/{c.name}", c) for c in self._tree.children(rec)]

    def _walk(self) -> Iterator[Tuple[str, Record]]:
        """Depth first in directory order; loops, deep nesting and huge trees are refused."""
        root = self._tree.root()
        seen: Set[int] = {root.extent}
        stack = [("", iter(self._tree.children(root)))]
        count = 0
        while stack:
            prefix, kids = stack[-1]
            child = next(kids, None)
            if child is None:
                stack.pop()
                continue
            count += 1
            if count > MAX_TOTAL:
                raise ImageFormatError(f"ISO image has more than {MAX_TOTAL} records")
            path = prefix + child.name
            yield path, child
            if child.is_dir:
                if child.extent in seen or len(stack) >= MAX_DEPTH:
                    raise ImageFormatError(f"ISO directory {path} loops or nests too deep")
                seen.add(child.extent)
                stack.append((path + "/", iter(self._tree.children(child))))

    def records(self) -> List[str]:
        """All ISO9660 paths, depth first in directory order."""
        return [p for p, _ in self._walk()]


def read_descriptors(fp: BinaryIO, name: Optional[str] = None) -> List[Dict[str, object]]:
    """Volume descriptors from sector 16 up to the terminator, as `dev show iso` prints."""
    out: List[Dict[str, object]] = []
    sector = 16
    while True:
        fp.seek(sector * SECTOR)
        vd = fp.read(SECTOR)
        if len(vd) < SECTOR or vd[1:6] != b"CD001":
            if sector == 16 and name is not None:
                raise ImageFormatError(
                    f"{name} is not an ISO9660 image (no primary volume descriptor)"
                )
            raise ImageFormatError(UNRECOGNIZED)
        kind = vd[0]
        if kind == 255:
            return out
        out.append(_descriptor(kind, vd))
        sector += 1
        if sector > 64:
            raise ImageFormatError("no volume descriptor terminator in ISO image")


def _descriptor(kind: int, vd: bytes) -> Dict[str, object]:
    if kind == 0:
        return {"type": "boot", "boot_system_id": _text(vd[7:39]), "boot_id": _text(vd[39:71])}
    if kind == 1:
        root = vd[156:190]
        return {
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
    if kind == 2:
        return {"type": "supplementary"}
    return {"type": "unknown", "type_id": kind}


def _text(b: bytes) -> str:
    return b.decode("ascii", errors="replace").rstrip(" \0")
