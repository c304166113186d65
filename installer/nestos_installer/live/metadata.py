"""JSON metadata of live media (features.json, igninfo.json, kargs.json) parsed with bounds on
size, nesting and shape into frozen dataclasses. Standard library and `errors` only (x2nestos
and its zipapp import it, Python 3.7+); knows nothing of ISO layouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from nestos_installer.errors import ImageFormatError

MAX_JSON = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 1 << 16
KARG_MAX = 2048


def load_json(data: bytes, what: str, limit: int = MAX_JSON) -> Any:
    """Parse `data` (UTF-8 JSON of at most `limit` bytes, at most MAX_DEPTH deep, strings
    encodable as UTF-8); anything else is an ImageFormatError naming `what`."""
    if len(data) > limit:
        raise ImageFormatError(f"{what} is too large ({len(data)} bytes)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ImageFormatError(f"parsing {what}: nested too deeply") from None
    except ValueError as e:  # also UnicodeDecodeError
        raise ImageFormatError(f"parsing {what}") from e
    _check_tree(doc, what)
    return doc


def _check_tree(doc: Any, what: str) -> None:
    """Nesting depth, node count, and no lone surrogates (`"\\ud800"`) in keys or strings."""
    todo: List[Tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while todo:
        node, depth = todo.pop()
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            raise ImageFormatError(f"parsing {what}: nested too deeply or too many values")
        if isinstance(node, dict):
            todo.extend((k, depth + 1) for k in node)
            todo.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ImageFormatError(f"invalid {what}: a string is not valid Unicode") from e


def load_object(data: bytes, what: str, limit: int = MAX_JSON) -> Dict[str, Any]:
    """load_json, and the document must be a JSON object."""
    doc = load_json(data, what, limit)
    if not isinstance(doc, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return doc


def is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a boolean), as offsets and lengths must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
        obj = load_object(data, "features.json")
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
class IgnInfo:
    """igninfo.json: the file holding the Ignition embed area, and where in it (length None:
    to the end of the file)."""

    file: str
    offset: int = 0
    length: Optional[int] = None

    @classmethod
    def from_json(cls, data: bytes) -> IgnInfo:
        info = load_object(data, "igninfo.json")
        path = info.get("file")
        if not isinstance(path, str) or not path:
            raise ImageFormatError("igninfo.json has no file")
        off: Any = info.get("offset", 0)
        length: Any = info.get("length")
        if not is_count(off) or not (length is None or is_count(length)):
            raise ImageFormatError(f"igninfo.json area {off}+{length} is outside {path}")
        return cls(path, off, length)


@dataclass(frozen=True)
class KargArea:
    """One karg embed area: `offset` in the ISO file `path` (as kargs.json gives it), or in the
    image itself (path None, once resolved); its pad and end bytes."""

    offset: int
    pad: bytes = b"#"
    end: bytes = b"\n"
    path: Optional[str] = None


@dataclass(frozen=True)
class KargsInfo:
    """Karg embed areas: all of length `size`, each holding the same kargs."""

    size: int
    default: str
    areas: Tuple[KargArea, ...]

    @classmethod
    def from_json(cls, data: bytes) -> KargsInfo:
        """kargs.json; its areas are relative to their files."""
        obj = load_object(data, "kargs.json")
        size: Any = obj.get("size")
        default: Any = obj.get("default")
        files: Any = obj.get("files")
        if not is_count(size) or not isinstance(default, str) or not isinstance(files, list):
            raise ImageFormatError("kargs.json has bad types")
        if size > KARG_MAX:
            raise ImageFormatError(f"karg embed area size larger than {KARG_MAX} (found {size})")
        if len(default.encode()) > size:
            raise ImageFormatError("default kargs longer than karg embed area")
        return cls(size, default, tuple(_karg_file(e) for e in files))

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


def _karg_file(entry: Any) -> KargArea:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("path"), str)
        or not is_count(entry.get("offset"))
    ):
        raise ImageFormatError("kargs.json has a bad file entry")
    pad, end = entry.get("pad", "#"), entry.get("end", "\n")
    if not isinstance(pad, str) or not isinstance(end, str):
        raise ImageFormatError("kargs.json pad/end must be one byte")
    pad_b, end_b = pad.encode(), end.encode()
    if len(pad_b) != 1 or len(end_b) != 1:
        raise ImageFormatError("kargs.json pad/end must be one byte")
    return KargArea(entry["offset"], pad_b, end_b, entry["path"])
