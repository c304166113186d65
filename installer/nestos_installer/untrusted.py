"""Untrusted input read whole: local files under a size cap (a FIFO, device or directory never hangs
or exhausts memory), JSON/YAML parsed under size and depth bounds, failures typed, source named.
Standard library only (PyYAML imported to parse YAML), Python 3.7+; imports `errors` only."""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple, Type, Union

from nestos_installer.errors import ConfigError, NestosError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
IGNITION_MAX = 64 * MiB
"""An Ignition config: the cap of install's --ignition-url fetch."""
CONFIG_MAX = 64 * KiB
"""An installer config file (a real one is a few hundred bytes; YAML is parsed in pure Python)."""
SMALL_FILE_MAX = 16 * MiB
"""CA bundles, NetworkManager keyfiles, install scripts, live Ignition fragments' neighbours."""
MAX_DEPTH = 64
"""Nesting of arrays/objects (or YAML collections) that any document we take may have."""

ErrorType = Callable[[str], NestosError]
"""An error class (ConfigError, StreamError...) or a function making one from a message."""
_READ_CHUNK = 1 * MiB


def size_text(n: int) -> str:
    """`65536` -> `64 KiB`: a limit in the user's terms."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def read_file(
    path: Union[str, Path],
    what: str,
    *,
    limit: int,
    error: ErrorType = ConfigError,
    regular_only: bool = False,
) -> bytes:
    """The whole of `path`, at most `limit` bytes, or `error` naming `what` and `path`.

    A directory is refused; a FIFO, a character or a block device is read up to the cap (a FIFO
    without a writer reads as empty rather than blocking the open), or refused: `regular_only`.
    """
    where = f"reading {what} {os.fsdecode(path)}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise error(where) from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{where}: it is a directory")
        if regular_only and not stat.S_ISREG(st.st_mode):
            raise error(f"{where}: not a regular file")
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise error(f"{where}: larger than {size_text(limit)}")
        os.set_blocking(fd, True)
        return _read_capped(fd, limit, where, error)
    except OSError as e:
        raise error(where) from e
    finally:
        os.close(fd)


def _read_capped(fd: int, limit: int, where: str, error: ErrorType) -> bytes:
    parts: List[bytes] = []
    size = 0
    while True:
        data = os.read(fd, min(_READ_CHUNK, limit + 1 - size))
        if not data:
            return b"".join(parts)
        size += len(data)
        if size > limit:
            raise error(f"{where}: larger than {size_text(limit)}")
        parts.append(data)


def require_utf8(text: str, what: str, error: ErrorType = UsageError) -> str:
    """`text` as given, if it can go into a UTF-8 document (kargs, JSON, YAML, cpio names).

    Command-line values and file names that are not UTF-8 arrive with lone surrogates.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not valid UTF-8: '{_shown(text)}'") from None
    return text


def _shown(text: str) -> str:
    """`text` printable: undecodable bytes (surrogate escapes) as \\xNN, any other lone
    surrogate (from JSON's \\ud800 escapes, say) as \\uNNNN."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def decode_utf8(data: bytes, source: str, error: ErrorType = ConfigError) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{source}: not valid UTF-8 (byte {e.start})") from None


def parse_json(
    data: Union[bytes, str],
    source: str,
    *,
    error: ErrorType = ConfigError,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A JSON document nested at most `max_depth` deep, or `error` naming `source`."""
    text = decode_utf8(data, source, error) if isinstance(data, bytes) else data
    if not text.strip():
        raise error(f"{source}: empty")
    try:
        doc = json.loads(text)
    except RecursionError:
        raise error(f"{source}: nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError as e:
        raise error(
            f"{source}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from None
    except ValueError:  # the one other: a number of more digits than int() takes
        raise error(f"{source}: not valid JSON (a number with too many digits)") from None
    if depth(doc) > max_depth:
        raise error(f"{source}: nested more than {max_depth} levels deep")
    return doc


def depth(doc: Any) -> int:
    """Nesting depth of lists/dicts (a scalar is 0), without recursion."""
    deepest = 0
    stack: List[Tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in node if isinstance(child, (list, dict)))
    return deepest


# PyYAML's constructors fail on hostile scalars with more than YAMLError (`!!int 0x`,
# `!!timestamp 1`, a 5000-digit integer): any of these means the document is not valid.
_YAML_FAILURES: Tuple[Type[Exception], ...] = (
    ValueError,
    TypeError,
    AttributeError,
    OverflowError,
    IndexError,
    KeyError,
)


def parse_yaml(
    data: Union[bytes, str],
    source: str,
    *,
    error: ErrorType = ConfigError,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A YAML document (safe tags only) nested at most `max_depth` deep, or `error`.

    The depth is checked while scanning: PyYAML's scanner is quadratic in the nesting of flow
    collections and its composer recursive, so `[[[[...` must stop at the bound, not after.
    """
    import yaml

    text = decode_utf8(data, source, error) if isinstance(data, bytes) else data
    try:
        return yaml.load(text, Loader=_bounded_loader(max_depth))  # noqa: S506
    except yaml.MarkedYAMLError as e:
        raise error(f"{source}: invalid YAML{_yaml_where(e)}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise error(f"{source}: invalid YAML ({e})") from None


def _yaml_where(e: Any) -> str:
    mark = e.problem_mark or e.context_mark
    return f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""


_LOADERS: Dict[int, Any] = {}


def _bounded_loader(max_depth: int) -> Any:
    """SafeLoader whose scanner refuses flow and block nesting deeper than `max_depth`."""
    if max_depth in _LOADERS:
        return _LOADERS[max_depth]
    import yaml

    def too_deep(loader: yaml.SafeLoader) -> Exception:
        problem = f"nested more than {max_depth} levels deep"
        return yaml.scanner.ScannerError(None, None, problem, loader.get_mark())

    class Loader(yaml.SafeLoader):
        def fetch_flow_collection_start(self, token_class: Any) -> None:
            if self.flow_level >= max_depth:
                raise too_deep(self)
            super().fetch_flow_collection_start(token_class)

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except _YAML_FAILURES:
                tag = node.tag.replace("tag:yaml.org,2002:", "!!")
                value = f" '{node.value[:40]}'" if isinstance(node.value, str) else ""
                problem = f"cannot read {tag} value{value}"
                raise yaml.constructor.ConstructorError(
                    None, None, problem, node.start_mark
                ) from None

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= max_depth:
                raise too_deep(self)
            added: bool = super().add_indent(column)
            return added

    _LOADERS[max_depth] = Loader
    return Loader
