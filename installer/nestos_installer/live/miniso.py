"""Minimal ISO: the MINISO.DAT bincode format, packing (for builds/tests) and unpacking.

Imports `live.*`, `kargs` and `errors`. Every table entry is checked against both images.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Tuple

from nestos_installer.errors import ImageFormatError, InputRefused, UsageError
from nestos_installer.live import outputs
from nestos_installer.live.embed import LiveIso
from nestos_installer.live.iso9660 import SECTOR, IsoImage
from nestos_installer.live.metadata import load_object
from nestos_installer.outputs import TEMP_PREFIX, new_file, refuse_existing

MAGIC = b"MINISO\0\0"
VERSION = 1
MAX_DATA = 1 << 20
LIVEISO_KARGS = ("nestos.liveiso=", "coreos.liveiso=")
CUSTOMIZED = (
    "Cannot operate on ISO with embedded customizations.\n"
    "Reset it with `nestos-installer iso reset` and try again."
)


@dataclass(frozen=True)
class Entry:
    minimal: int  # sector in the minimal ISO
    full: int  # sector in the full ISO
    length: int  # bytes


@dataclass(frozen=True)
class MinisoData:
    app_version: str
    table: Tuple[Entry, ...]
    digest: bytes
    packed: bytes  # xz


def _varint(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + n.to_bytes(2, "little")
    if n < 1 << 32:
        return b"\xfc" + n.to_bytes(4, "little")
    return b"\xfd" + n.to_bytes(8, "little")


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ImageFormatError("truncated MINISO.DAT")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        b = self.take(1)[0]
        if b < 251:
            return b
        size = {251: 2, 252: 4, 253: 8}.get(b)
        if size is None:
            raise ImageFormatError("bad varint in MINISO.DAT")
        return int.from_bytes(self.take(size), "little")


def encode(data: MinisoData) -> bytes:
    out = bytearray(MAGIC + _varint(VERSION))
    app = data.app_version.encode()
    out += _varint(len(app)) + app
    out += _varint(len(data.table))
    for e in data.table:
        out += _varint(e.minimal) + _varint(e.full) + _varint(e.length)
    out += data.digest
    out += _varint(len(data.packed)) + data.packed
    return bytes(out)


def decode(buf: bytes) -> MinisoData:
    r = _Reader(buf[:MAX_DATA])
    if r.take(8) != MAGIC:
        raise ImageFormatError("MINISO.DAT has bad magic")
    version = r.varint()
    if version != VERSION:
        raise ImageFormatError(f"unsupported MINISO.DAT version {version}")
    app = r.take(r.varint()).decode(errors="replace")
    count = r.varint()
    if count > len(buf):
        raise ImageFormatError("MINISO.DAT table too long")
    table = tuple(Entry(r.varint(), r.varint(), r.varint()) for _ in range(count))
    digest = r.take(32)
    packed = r.take(r.varint())
    return MinisoData(app, table, digest, packed)


def pack(full_path: str, minimal_path: str, app_version: str = "0.20.0") -> bytes:
    """MINISO.DAT for `minimal_path`, reusing files with identical content in `full_path`."""
    with open(full_path, "rb") as ff, open(minimal_path, "rb") as mf:
        full, mini = IsoImage(ff), IsoImage(mf)
        entries: List[Entry] = []
        for path in mini.records():
            m = mini.lookup(path)
            if m.is_dir or m.length == 0 or not full.exists(path):
                continue
            f = full.lookup(path)
            if f.length != m.length or full.read(path, 1 << 34) != mini.read(path, 1 << 34):
                continue
            entries.append(Entry(m.offset // SECTOR, f.offset // SECTOR, m.length))
        entries.sort(key=lambda e: e.minimal)
        mf.seek(0)
        image = mf.read()
        full.close()
        mini.close()
    packed = bytearray()
    pos = 0
    for e in entries:
        packed += image[pos : e.minimal * SECTOR]
        pos = e.minimal * SECTOR + e.length
    packed += image[pos:]
    xz = lzma.compress(bytes(packed), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)
    return encode(MinisoData(app_version, tuple(entries), hashlib.sha256(image).digest(), xz))


def unpack(data: MinisoData, full: BinaryIO, full_size: int, out: BinaryIO) -> None:
    """Rebuild the minimal ISO into `out`; the sha256 must match the stored digest."""
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:  # the minimal ISO is smaller than the full one: bound what a hostile xz may expand to
        packed = dec.decompress(data.packed, max_length=full_size + 1)
    except lzma.LZMAError as e:
        raise ImageFormatError("decompressing MINISO.DAT") from e
    if len(packed) > full_size:
        raise ImageFormatError("MINISO.DAT expands to more than the ISO image")
    h = hashlib.sha256()
    pos = 0  # output position
    ppos = 0  # position in packed bytes

    def emit(b: bytes) -> None:
        h.update(b)
        out.write(b)

    for ent in data.table:
        target = ent.minimal * SECTOR
        if target < pos or ppos + (target - pos) > len(packed):
            raise ImageFormatError("MINISO.DAT table is inconsistent")
        emit(packed[ppos : ppos + target - pos])
        ppos += target - pos
        src = ent.full * SECTOR
        if src + ent.length > full_size:
            raise ImageFormatError("MINISO.DAT entry is outside the ISO image")
        full.seek(src)
        left = ent.length
        while left:
            buf = full.read(min(left, 1 << 20))
            if not buf:
                raise ImageFormatError("ISO image shrank while reading")
            emit(buf)
            left -= len(buf)
        pos = target + ent.length
    emit(packed[ppos:])
    found = h.hexdigest()
    if found != data.digest.hex():
        raise ImageFormatError(f"wrong final digest: expected {data.digest.hex()}, found {found}")


def _edit_minimal(path: str, rootfs_url: Optional[str]) -> None:
    """Drop the liveiso karg (and maybe add a rootfs URL) in kargs and kargs.json."""
    with open(path, "rb") as fp:
        iso = LiveIso(fp)
        try:
            iso.require_kargs()
            current = iso.current_kargs().split()
            idx = next((i for i, k in enumerate(current) if k.startswith(LIVEISO_KARGS)), None)
            if idx is None:
                raise ImageFormatError("minimal ISO does not have nestos.liveiso= karg")
            prefix = current[idx].split(".", 1)[0]
            del current[idx]
            if rootfs_url is not None:
                current.append(f"{prefix}.live.rootfs_url={rootfs_url}")
            new = " ".join(current)
            writes = iso.kargs_writes(new)
            jpath = iso.kargs_json_path()
            if jpath is not None:
                jf = iso.iso.lookup(jpath)
                obj = load_object(iso.iso.read(jpath, 1 << 20), "kargs.json")
                obj["default"] = new
                text = json.dumps(obj, indent=2).encode()
                if len(text) > jf.length:
                    text = json.dumps(obj, separators=(",", ":")).encode()
                if len(text) > jf.length:
                    raise ImageFormatError("new kargs.json is larger than the original")
                writes.append((jf.offset, text + b" " * (jf.length - len(text))))
        finally:
            iso.iso.close()
    outputs.write_in_place(path, writes)


def extract_minimal_iso(
    path: str,
    output: str,
    output_rootfs: Optional[str],
    rootfs_url: Optional[str],
    stdout: Optional[BinaryIO] = None,
) -> None:
    """The minimal ISO to `output` (a new file, or `-` for stdout), maybe the rootfs too."""
    if rootfs_url is not None and any(c.isspace() for c in rootfs_url):
        raise UsageError(f"forbidden whitespace found in '{rootfs_url}'")
    for dest in (output_rootfs, output):
        if dest is not None and dest != "-":
            refuse_existing(dest)  # before any work
    with open(path, "rb") as fp:
        iso = LiveIso(fp)
        try:
            data = _minimal_data(iso)
            if output_rootfs is not None:
                f = iso.iso.lookup("IMAGES/PXEBOOT/ROOTFS.IMG")
                with new_file(output_rootfs) as out:
                    iso.iso.copy_file(f, out.file)
            if output == "-":
                _stream_minimal(data, fp, iso.size, rootfs_url, stdout)
                return
            with new_file(output) as out:
                unpack(data, fp, iso.size, out.file)
                out.file.flush()
                _edit_minimal(str(out.path), rootfs_url)
        finally:
            iso.iso.close()


def _minimal_data(iso: LiveIso) -> MinisoData:
    raw = iso.miniso_data()
    if raw is None:
        raise InputRefused("This ISO image does not support extracting a minimal ISO.")
    if iso.is_customized():
        raise InputRefused(CUSTOMIZED)
    return decode(raw)


def _stream_minimal(
    data: MinisoData,
    fp: BinaryIO,
    size: int,
    rootfs_url: Optional[str],
    stdout: Optional[BinaryIO],
) -> None:
    """Build the minimal ISO in a scratch file (its kargs are edited in place), then copy it."""
    if stdout is None:
        raise ValueError("stdout stream required for '-'")
    with tempfile.NamedTemporaryFile(prefix=TEMP_PREFIX) as tmp:
        unpack(data, fp, size, tmp)  # type: ignore[arg-type]
        tmp.flush()
        _edit_minimal(tmp.name, rootfs_url)
        tmp.seek(0)
        shutil.copyfileobj(tmp, stdout, 1 << 20)
    stdout.flush()
