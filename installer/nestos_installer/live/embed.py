"""Embed areas of a live ISO: the Ignition/initrd area, the karg areas and features.json.

Imports `live.iso9660`, `live.initrd`, `errors`. Finds areas through NESTOS/ (then COREOS/)
metadata or legacy headers, bounds-checks them, and turns edits into (offset, bytes) writes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

from nestos_installer.errors import ImageFormatError, NotFound, UsageError
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.iso9660 import IsoImage

AREA_INFLATE_FACTOR = 64  # the embedded initrd may inflate to 64x its area (256 KiB -> 16 MiB)

META_DIRS = ("nestos", "coreos")
NETWORK_DIR = "etc/nestos-firstboot-network/"
LEGACY_NETWORK_DIR = "etc/coreos-firstboot-network/"
CONFIG_IGN = "config.ign"
KARG_HEADER_OFFSET = 32672
KARG_HEADER_LEN = 72
KARG_MAX = 2048
UNRECOGNIZED = "Unrecognized NestOS ISO image."
NO_KARGS = "No karg embed areas found; old or corrupted NestOS ISO image."

Write = Tuple[int, bytes]


@dataclass(frozen=True)
class Region:
    offset: int
    length: int


@dataclass(frozen=True)
class Features:
    """features.json: what customizations this OS image supports (missing file = none)."""

    installer_config: bool = False
    directives: Dict[str, bool] = field(default_factory=dict)
    live_initrd_network: bool = False

    @classmethod
    def from_json(cls, data: Optional[bytes]) -> Features:
        if data is None:
            return cls()
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise ImageFormatError("parsing features.json") from e
        if not isinstance(obj, dict):
            raise ImageFormatError("features.json is not a JSON object")
        directives = obj.get("installer-config-directives") or {}
        if not isinstance(directives, dict):
            raise ImageFormatError("features.json: bad installer-config-directives")
        return cls(
            installer_config=obj.get("installer-config") is True,
            directives={str(k): v is True for k, v in directives.items()},
            live_initrd_network=obj.get("live-initrd-network") is True,
        )

    @property
    def console(self) -> bool:
        return self.directives.get("console", False)


@dataclass(frozen=True)
class KargArea:
    offset: int
    pad: bytes = b"#"
    end: bytes = b"\n"


@dataclass(frozen=True)
class KargsInfo:
    """Karg embed areas: all of length `size`, each holding the same kargs."""

    size: int
    default: str
    areas: Tuple[KargArea, ...]

    def to_json(self) -> Dict[str, Any]:
        return {
            "length": self.size,
            "default": self.default,
            "kargs": [
                {
                    "offset": a.offset,
                    "length": self.size,
                    "pad": a.pad.decode(),
                    "end": a.end.decode(),
                }
                for a in self.areas
            ],
        }


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
        try:
            if raw is None:
                f = self.iso.lookup("images/ignition.img")
                return Region(f.offset, f.length)
            info = json.loads(raw)
            if not isinstance(info, dict) or not isinstance(info.get("file"), str):
                raise ImageFormatError("igninfo.json has no file")
            f = self.iso.lookup(info["file"])
        except NotFound as e:
            raise ImageFormatError(UNRECOGNIZED) from e
        except ValueError as e:
            raise ImageFormatError("parsing igninfo.json") from e
        off = info.get("offset", 0)
        length = info.get("length", f.length - off if isinstance(off, int) else 0)
        if (
            not isinstance(off, int)
            or not isinstance(length, int)
            or off < 0
            or length < 0
            or off + length > f.length
        ):
            raise ImageFormatError(f"igninfo.json area {off}+{length} is outside {info['file']}")
        self._check(f.offset + off, length, "Ignition embed area")
        return Region(f.offset + off, length)

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
        try:
            obj = json.loads(raw)
            size = obj["size"]
            default = obj["default"]
            files = obj["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise ImageFormatError("parsing kargs.json") from e
        if (
            not isinstance(size, int)
            or not isinstance(default, str)
            or size < 0
            or not isinstance(files, list)
        ):
            raise ImageFormatError("kargs.json has bad types")
        if size > KARG_MAX:
            raise ImageFormatError(f"karg embed area size larger than {KARG_MAX} (found {size})")
        if len(default.encode()) > size:
            raise ImageFormatError("default kargs longer than karg embed area")
        areas = []
        for entry in files:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("offset"), int)
                or entry["offset"] < 0
            ):
                raise ImageFormatError("kargs.json has a bad file entry")
            try:
                f = self.iso.lookup(entry["path"])
            except NotFound as e:
                raise ImageFormatError(f"karg file {entry['path']} not found") from e
            if entry["offset"] + size > f.length:
                raise ImageFormatError(f"karg area is outside {entry['path']}")
            pad = str(entry.get("pad", "#")).encode()
            end = str(entry.get("end", "\n")).encode()
            if len(pad) != 1 or len(end) != 1:
                raise ImageFormatError("kargs.json pad/end must be one byte")
            off = f.offset + entry["offset"]
            self._check(off, size, "karg embed area")
            areas.append(KargArea(off, pad, end))
        if not areas:
            return None
        return KargsInfo(size, default, tuple(areas))

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
        k = kargs.strip().encode()
        if len(k) >= info.size:
            raise UsageError(f"kargs too large for area: {len(k) + 1} vs {info.size}")
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
            raise UsageError(f"Compressed initramfs is too large: {len(data)} > {area.length}")
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
