"""Embed areas of a live ISO: the Ignition/initrd area, the karg areas and features.json.

Imports `live.iso9660`, `live.metadata`, `live.initrd`, `errors`. Finds areas through NESTOS/
(then COREOS/) metadata or legacy headers, bounds-checks them, and turns edits into writes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Tuple

from nestos_installer.errors import ImageFormatError, InputRefused, NotFound
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.iso9660 import UNRECOGNIZED, IsoImage
from nestos_installer.live.metadata import KARG_MAX, Features, IgnInfo, KargArea, KargsInfo

AREA_INFLATE_FACTOR = 64  # the embedded initrd may inflate to 64x its area (256 KiB -> 16 MiB)

META_DIRS = ("nestos", "coreos")
NETWORK_DIR = "etc/nestos-firstboot-network/"
LEGACY_NETWORK_DIR = "etc/coreos-firstboot-network/"
CONFIG_IGN = "config.ign"
KARG_HEADER_OFFSET = 32672
KARG_HEADER_LEN = 72
NO_KARGS = "No karg embed areas found; old or corrupted NestOS ISO image."

Write = Tuple[int, bytes]


@dataclass(frozen=True)
class Region:
    offset: int
    length: int


def _u64(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", b, off)[0])


class LiveIso:
    """A live ISO opened for reading; edits come back as bounds-checked writes."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.iso = IsoImage(fp)
        self.size = self.iso.size
        self.features = Features.from_json(self._meta("features.json", "FEATURES.JSO"))
        self._initrd_area: Optional[Region] = None
        self._area_error: Optional[ImageFormatError] = None
        self.kargs = self._find_kargs()

    # ---- metadata ----------------------------------------------------------------------
    def _meta(self, name: str, short: str, limit: int = 1 << 20) -> Optional[bytes]:
        for d in META_DIRS:
            for path in (f"{d}/{name}", f"{d.upper()}/{short}"):
                try:
                    data: bytes = self.iso.read(path, limit)
                    return data
                except NotFound:
                    continue
        return None

    def _meta_file(self, name: str, short: str) -> Optional[str]:
        for d in META_DIRS:
            for path in (f"{d}/{name}", f"{d.upper()}/{short}"):
                if self.iso.exists(path):
                    return path
        return None

    def _check(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ImageFormatError(f"{what} at {offset}+{length} is outside the ISO image")

    @property
    def initrd_area(self) -> Region:
        if self._initrd_area is None:
            self._initrd_area = self._find_initrd_area()
        return self._initrd_area

    def _find_initrd_area(self) -> Region:
        raw = self._meta("igninfo.json", "IGNINFO.JSO")
        info = IgnInfo("images/ignition.img") if raw is None else IgnInfo.from_json(raw)
        try:
            f = self.iso.lookup(info.file)
        except NotFound as e:
            raise ImageFormatError(UNRECOGNIZED) from e
        length = f.length - info.offset if info.length is None else info.length
        if length < 0 or info.offset + length > f.length:
            raise ImageFormatError(
                f"igninfo.json area {info.offset}+{length} is outside {info.file}"
            )
        self._check(f.offset + info.offset, length, "Ignition embed area")
        return Region(f.offset + info.offset, length)

    def _find_kargs(self) -> Optional[KargsInfo]:
        raw = self._meta("kargs.json", "KARGS.JSO")
        if raw is not None:
            return self._kargs_json(raw)
        self.fp.seek(KARG_HEADER_OFFSET)
        hdr = self.fp.read(KARG_HEADER_LEN)
        if len(hdr) < KARG_HEADER_LEN or hdr[:8] != b"coreKarg":
            return None
        size = _u64(hdr, 8)
        if size > KARG_MAX:
            raise ImageFormatError(f"karg embed area size larger than {KARG_MAX} (found {size})")
        default_off = _u64(hdr, 16)
        areas = []
        for i in range(6):
            off = _u64(hdr, 24 + 8 * i)
            if off == 0:
                break
            self._check(off, size, "karg embed area")
            areas.append(KargArea(off))
        self._check(default_off, size, "default karg area")
        if not areas:
            return None
        default = self._parse_area(KargArea(default_off), size)
        return KargsInfo(size, default, tuple(areas))

    def _kargs_json(self, raw: bytes) -> Optional[KargsInfo]:
        info = KargsInfo.from_json(raw)
        areas = []
        for area in info.areas:
            path = str(area.path)
            try:
                f = self.iso.lookup(path)
            except NotFound as e:
                raise ImageFormatError(f"karg file {path} not found") from e
            if area.offset + info.size > f.length:
                raise ImageFormatError(f"karg area is outside {path}")
            off = f.offset + area.offset
            self._check(off, info.size, "karg embed area")
            areas.append(KargArea(off, area.pad, area.end))
        if not areas:
            return None
        return KargsInfo(info.size, info.default, tuple(areas))

    # ---- kargs -------------------------------------------------------------------------
    def require_kargs(self) -> KargsInfo:
        if self.kargs is None:
            raise ImageFormatError(NO_KARGS)
        return self.kargs

    def _parse_area(self, area: KargArea, size: int) -> str:
        self.fp.seek(area.offset)
        raw = self.fp.read(size)
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise ImageFormatError(f"karg area at {area.offset} is not UTF-8") from e
        return text.rstrip(area.pad.decode()).rstrip(area.end.decode()).strip()

    def current_kargs(self) -> str:
        info = self.require_kargs()
        values = [(a.offset, self._parse_area(a, info.size)) for a in info.areas]
        first = values[0][1]
        for off, val in values[1:]:
            if val != first:
                raise ImageFormatError(
                    f"kargs don't match at all offsets! (expected '{first}', but offset {off} "
                    f"has: '{val}')"
                )
        return first

    def kargs_writes(self, kargs: str) -> List[Write]:
        info = self.require_kargs()
        try:
            k = kargs.strip().encode()
        except UnicodeEncodeError as e:
            raise InputRefused("kargs are not valid UTF-8") from e
        if len(k) >= info.size:
            raise InputRefused(f"kargs too large for area: {len(k) + 1} vs {info.size}")
        out = []
        for a in info.areas:
            body = k + a.end
            out.append((a.offset, body + a.pad * (info.size - len(body))))
        return out

    def kargs_customized(self) -> bool:
        return self.kargs is not None and self.current_kargs() != self.kargs.default

    # ---- initrd ------------------------------------------------------------------------
    def read_initrd(self) -> Initrd:
        area = self.initrd_area
        self.fp.seek(area.offset)
        data = self.fp.read(area.length)
        if not any(data):
            return Initrd()
        # what we embed is a few small files: a bomb in the area stops early
        return Initrd.from_bytes(data, limit=max(AREA_INFLATE_FACTOR * area.length, 1 << 20))

    def initrd_writes(self, initrd: Initrd) -> List[Write]:
        area = self.initrd_area
        if initrd.is_empty():
            return [(area.offset, bytes(area.length))]
        data = initrd.to_xz()
        if len(data) > area.length:
            raise InputRefused(f"Compressed initramfs is too large: {len(data)} > {area.length}")
        return [(area.offset, data + bytes(area.length - len(data)))]

    def is_customized(self) -> bool:
        initrd = self.read_initrd()
        return (
            initrd.get(CONFIG_IGN) is not None
            or bool(network_files(initrd))
            or self.kargs_customized()
        )

    # ---- other files -------------------------------------------------------------------
    def miniso_data(self) -> Optional[bytes]:
        return self._meta("miniso.dat", "MINISO.DAT")

    def kargs_json_path(self) -> Optional[str]:
        return self._meta_file("kargs.json", "KARGS.JSO")


def network_files(initrd: Initrd) -> List[str]:
    return [
        p for p in initrd.paths() if p.startswith(NETWORK_DIR) or p.startswith(LEGACY_NETWORK_DIR)
    ]
