"""Stream metadata: frozen dataclasses parsed from JSON, (arch, platform, format) selection, and
its URLs (the stream document, an artifact's signature). Stdlib only, Python 3.7+: never imports
nestos_installer or an HTTP client (`load` takes a `get(url) -> bytes`); errors are StreamError.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

DEFAULT_BASE_URL = "https://nestos.org.cn/NestOS-release/streams/"
DEFAULT_STREAM = "2403-LTS"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class StreamError(Exception):
    """Stream metadata that cannot be parsed, or a selection that matches nothing."""


def stream_url(base: str, name: str) -> str:
    """`<base>/<name>.json` by RFC 3986 resolution; `base` gets a trailing '/' if missing."""
    if not name or "/" in name or name in (".", ".."):
        raise StreamError(f"invalid stream name '{name}'")
    if not base.endswith("/"):
        base += "/"
    return urljoin(base, quote(name) + ".json")


def signature_url(url: str) -> str:
    """The detached signature next to `url`: `.sig` appended to the path, query and fragment
    kept (`http://h/f.img?x=1` -> `http://h/f.img.sig?x=1`), as coreos-installer does."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + ".sig"))


def load(get: Callable[[str], bytes], name: str, base_url: str = DEFAULT_BASE_URL) -> Stream:
    """Fetch `<base_url>/<name>.json` with `get` (the caller's transport) and parse it.

    `get`'s own errors pass through; a bad name or document is a StreamError.
    """
    url = stream_url(base_url, name)
    return Stream.from_json(get(url), url)


def _printable(text: str) -> str:
    """One line whatever the document holds: control characters, line breaks and lone
    surrogates in its keys or values shown escaped (`\\n`, `\\ud800`)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Ctx:
    """Where we are in the document, for error messages (`a.b.c: missing 'x'`)."""

    def __init__(self, source: str, path: Tuple[str, ...] = ()) -> None:
        self.source = source
        self.path = path

    def child(self, key: str) -> _Ctx:
        return _Ctx(self.source, self.path + (key,))

    def error(self, msg: str) -> StreamError:
        where = ".".join(self.path)
        prefix = f"stream metadata from {self.source}: "
        return StreamError(_printable(prefix + (f"{where}: {msg}" if where else msg)))

    def obj(self, value: Any) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected an object, found {_kind(value)}")
        return value

    def req(self, obj: Mapping[str, Any], key: str, kind: type) -> Any:
        if key not in obj:
            raise self.error(f"missing '{key}'")
        return self.typed(obj, key, kind)

    def opt(self, obj: Mapping[str, Any], key: str, kind: type) -> Any:
        if key not in obj or obj[key] is None:
            return None
        return self.typed(obj, key, kind)

    def typed(self, obj: Mapping[str, Any], key: str, kind: type) -> Any:
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            want = "a string" if kind is str else "an object"
            raise self.error(f"'{key}' must be {want}, found {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


@dataclass(frozen=True)
class Artifact:
    """One downloadable file: URL, detached signature URL, digests of the file as stored."""

    location: str
    signature: Optional[str] = None
    sha256: Optional[str] = None
    uncompressed_sha256: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: Any, ctx: _Ctx) -> Artifact:
        obj = ctx.obj(raw)
        location = ctx.req(obj, "location", str)
        if not location:
            raise ctx.error("'location' is empty")
        digests = []
        for key in ("sha256", "uncompressed-sha256"):
            value = ctx.opt(obj, key, str)
            if value is not None and not _HEX64.match(value):
                raise ctx.error(f"'{key}' is not 64 hex digits")
            digests.append(value.lower() if value else None)
        return cls(location, ctx.opt(obj, "signature", str), digests[0], digests[1])

    @classmethod
    def from_url(cls, url: str) -> Artifact:
        """An artifact known by its URL alone: its signature sits next to it."""
        return cls(url, signature=signature_url(url))

    def to_dict(self) -> Dict[str, str]:
        out = {"location": self.location}
        if self.signature is not None:
            out["signature"] = self.signature
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.uncompressed_sha256 is not None:
            out["uncompressed-sha256"] = self.uncompressed_sha256
        return out


@dataclass(frozen=True)
class Platform:
    """A platform's release and its formats: format -> artifact type -> Artifact."""

    release: str
    formats: Mapping[str, Mapping[str, Artifact]]

    @classmethod
    def from_dict(cls, raw: Any, ctx: _Ctx) -> Platform:
        obj = ctx.obj(raw)
        release = ctx.req(obj, "release", str)
        fctx = ctx.child("formats")
        formats: Dict[str, Dict[str, Artifact]] = {}
        for fmt, entry in ctx.req(obj, "formats", dict).items():
            ectx = fctx.child(fmt)
            arts = {
                kind: Artifact.from_dict(a, ectx.child(kind))
                for kind, a in sorted(ectx.obj(entry).items())
            }
            if not arts:
                raise ectx.error("no artifacts")
            formats[fmt] = arts
        return cls(release, formats)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "release": self.release,
            "formats": {
                f: {k: a.to_dict() for k, a in arts.items()} for f, arts in self.formats.items()
            },
        }


@dataclass(frozen=True)
class Arch:
    """An architecture's artifacts by platform; `images` (cloud image ids) kept raw."""

    artifacts: Mapping[str, Platform]
    images: Optional[Mapping[str, Any]] = None

    @classmethod
    def from_dict(cls, raw: Any, ctx: _Ctx) -> Arch:
        obj = ctx.obj(raw)
        actx = ctx.child("artifacts")
        artifacts = {
            name: Platform.from_dict(p, actx.child(name))
            for name, p in ctx.req(obj, "artifacts", dict).items()
        }
        return cls(artifacts, ctx.opt(obj, "images", dict))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"artifacts": {n: p.to_dict() for n, p in self.artifacts.items()}}
        if self.images is not None:
            out["images"] = dict(self.images)
        return out


@dataclass(frozen=True)
class Stream:
    """A whole stream document (`<base>/<stream>.json`)."""

    stream: str
    metadata: Mapping[str, Any]
    architectures: Mapping[str, Arch]

    @classmethod
    def from_json(cls, data: Union[bytes, str], source: str) -> Stream:
        """Parse and validate; every problem is one StreamError line naming `source`."""
        where = f"stream metadata from {source}"
        try:
            raw = json.loads(data)
        except RecursionError:  # `[[[[...`: the parser's stack, not ours, runs out
            raise StreamError(f"{where}: not valid JSON (nested too deeply)") from None
        except UnicodeDecodeError as e:
            raise StreamError(f"{where}: not valid JSON (not UTF-8 at byte {e.start})") from None
        except json.JSONDecodeError as e:
            why = f"line {e.lineno} column {e.colno}: {e.msg}"
            raise StreamError(f"{where}: not valid JSON ({why})") from None
        except ValueError:  # the one other: a number of more digits than int() takes
            raise StreamError(f"{where}: not valid JSON (a number with too many digits)") from None
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> Stream:
        ctx = _Ctx(source)
        obj = ctx.obj(raw)
        name = ctx.req(obj, "stream", str)
        metadata = ctx.opt(obj, "metadata", dict) or {}
        archctx = ctx.child("architectures")
        arches = {
            a: Arch.from_dict(v, archctx.child(a))
            for a, v in ctx.req(obj, "architectures", dict).items()
        }
        return cls(name, metadata, arches)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "stream": self.stream,
            "metadata": dict(self.metadata),
            "architectures": {a: v.to_dict() for a, v in self.architectures.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def platform(self, arch: str, platform: str) -> Platform:
        """The Platform for (arch, platform); the error lists what exists."""
        a = self.architectures.get(arch)
        if a is None:
            raise StreamError(
                f"no architecture '{arch}' in stream {self.stream}; "
                f"available: {_choices(self.architectures)}"
            )
        p = a.artifacts.get(platform)
        if p is None:
            raise StreamError(
                f"no platform '{platform}' for {arch} in stream {self.stream}; "
                f"available: {_choices(a.artifacts)}"
            )
        return p

    def select(self, arch: str, platform: str, format: str) -> Dict[str, Artifact]:  # noqa: A002
        """Artifact type -> Artifact for one choice, in artifact-type order."""
        p = self.platform(arch, platform)
        arts = p.formats.get(format)
        if arts is None:
            raise StreamError(
                f"no format '{format}' for platform '{platform}' on {arch}; "
                f"available: {_choices(p.formats)}"
            )
        return dict(sorted(arts.items()))

    def rows(self) -> List[Tuple[str, str, str]]:
        """Every (architecture, platform, format), sorted."""
        return sorted(
            (a, p, f)
            for a, arch in self.architectures.items()
            for p, plat in arch.artifacts.items()
            for f in plat.formats
        )


def _choices(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(mapping)) or "(none)"
