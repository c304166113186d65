"""newc cpio archives (the initramfs format): read, write, and the member-name checks.

stdlib + `errors` only and Python 3.7-compatible: the x2nestos zipapp bundles it. Every field
read from an archive is hostile: exactly 8 hex digits, sizes bounded by what is left.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from nestos_installer.errors import ImageFormatError

MAGICS = (b"070701", b"070702")  # newc, and newc with a checksum field (not checked)
WRITE_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110
PATH_MAX = 4096  # the kernel refuses longer names too
MAX_FIELD = 0xFFFFFFFF
BLOCK = 1 << 20  # read-ahead of the parser
MAX_READ = 64 << 20  # largest single read asked of a source
_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")


@dataclass(frozen=True)
class Entry:
    """One archive member. `name` is decoded from UTF-8 with surrogateescape, so undecodable
    bytes survive a read-write round trip; `mode` holds the file type and permission bits."""

    name: str
    mode: int
    data: bytes = b""
    nlink: int = 1
    ino: int = 0
    rdev: Tuple[int, int] = (0, 0)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """`name` for one line of terminal output: undecodable bytes and control characters become
    backslash escapes (`\\xff`, `\\n`)."""
    if name.isprintable():  # the common case; lone surrogates are not printable
        return name
    text = encode_name(name).decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


# ---- member names ---------------------------------------------------------------------------


def path_problem(path: str, normalized: bool = False) -> Optional[str]:
    """Why `path` may not be a member name, or None. Absolute paths and `..` would land outside
    the extraction directory; `normalized` also refuses `.` and empty components."""
    if not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    parts = path.split("/")
    if path.startswith("/") or ".." in parts:
        return "contains path traversal"
    if normalized and any(p in ("", ".") for p in parts):
        return "must be relative without '.' or empty components"
    return None


def check_member_path(path: str) -> str:
    """Refuse (ImageFormatError) names that would land outside the extraction directory."""
    problem = path_problem(path)
    if problem is not None:
        raise ImageFormatError(f"path {printable(path)} {problem}")
    return path


def parents_first(paths: Iterable[str]) -> Iterator[Tuple[str, bool]]:
    """(path, is_directory) in byte order of `paths`, each missing parent directory just
    before its first child."""
    emitted = set()
    for path in sorted(set(paths), key=encode_name):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in emitted:
                emitted.add(parent)
                yield parent, True
        yield path, False


# ---- writing --------------------------------------------------------------------------------


def entry_bytes(entry: Entry) -> bytes:
    """Header, name and data of one member, each padded to 4 bytes."""
    name = encode_name(entry.name)
    if not name or b"\0" in name or len(name) >= PATH_MAX:
        raise ImageFormatError(f"cannot store the name {printable(entry.name)!r} in a cpio archive")
    fields = [entry.ino, entry.mode, 0, 0, entry.nlink, 0, len(entry.data), 0, 0]
    fields += [entry.rdev[0], entry.rdev[1], len(name) + 1, 0]
    if any(not 0 <= f <= MAX_FIELD for f in fields):
        raise ImageFormatError(f"cpio member {printable(entry.name)} does not fit a newc header")
    head = WRITE_MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + entry.data + b"\0" * (-len(entry.data) % 4)


def write(entries: Iterable[Entry], trailer_nlink: int = 1) -> bytes:
    """An uncompressed newc archive of `entries` in the given order, then the trailer."""
    out = [entry_bytes(e) for e in entries]
    out.append(entry_bytes(Entry(TRAILER, 0, nlink=trailer_nlink)))
    return b"".join(out)


# ---- reading --------------------------------------------------------------------------------


class Source:
    """Where a Stream's bytes come from: `read(n)` gives 1..n bytes, or b"" at the end."""

    def read(self, n: int) -> bytes:
        raise NotImplementedError

    def expect(self, n: int, what: str) -> None:
        """Raise early when `n` more bytes (for `what`) cannot be there or are not allowed."""


class MemorySource(Source):
    """The bytes of `data` from offset `pos` on."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def expect(self, n: int, what: str) -> None:
        if n > len(self.data) - self.pos:
            raise ImageFormatError(f"cpio {what} runs past end of archive")


class Stream:
    """Exact reads with read-ahead over a Source; `offset` counts the bytes taken, so it only
    grows. `base` is added to offsets in messages."""

    def __init__(self, source: Source, base: int = 0) -> None:
        self.source = source
        self.base = base
        self.offset = 0
        self._buf = b""
        self._at = 0  # read-ahead is self._buf[self._at:]

    def _ahead(self) -> int:
        return len(self._buf) - self._at

    def expect(self, n: int, what: str) -> None:
        if n > self._ahead():
            self.source.expect(n - self._ahead(), what)

    def take(self, n: int, what: str) -> bytes:
        """Exactly `n` bytes, or ImageFormatError saying `what` is truncated."""
        at = self._at
        if at + n <= len(self._buf):
            self._at = at + n
            self.offset += n
            return self._buf[at : at + n]
        parts = [self._buf[self._at :]]
        got = len(parts[0])
        self._buf, self._at = b"", 0
        while got < n:
            want = n - got
            chunk = self.source.read(BLOCK if want < BLOCK else min(want, MAX_READ))
            if not chunk:
                raise ImageFormatError(f"truncated cpio {what}")
            if len(chunk) > want:
                self._buf, self._at = chunk, want
                chunk = chunk[:want]
            parts.append(chunk)
            got += len(chunk)
        self.offset += n
        return b"".join(parts)

    def skip(self, n: int, what: str) -> None:
        """Like `take`, without keeping the bytes."""
        step = min(n, self._ahead())
        self._at += step
        self.offset += step
        n -= step
        while n > 0:
            chunk = self.source.read(min(max(n, BLOCK), MAX_READ))
            if not chunk:
                raise ImageFormatError(f"truncated cpio {what}")
            step = min(n, len(chunk))
            if len(chunk) > step:
                self._buf, self._at = chunk, step
            self.offset += step
            n -= step

    def pad(self) -> None:
        """Skip the padding to the next multiple of 4; the archive may end instead."""
        want = -self.offset % 4
        if want > self._ahead():
            self._buf, self._at = self._buf[self._at :] + self.source.read(BLOCK), 0
        step = min(want, self._ahead())
        self._at += step
        self.offset += step

    def rest(self) -> Iterator[bytes]:
        """Everything after what was taken: the read-ahead, then the source to its end."""
        if self._ahead():
            yield self._buf[self._at :]
        self._buf, self._at = b"", 0
        while True:
            chunk = self.source.read(BLOCK)
            if not chunk:
                return
            yield chunk


def _all(name: str, mode: int) -> bool:
    return True


def _header(raw: bytes, at: int) -> List[int]:
    if raw[:6] not in MAGICS:
        raise ImageFormatError(f"bad cpio magic at offset {at}")
    if not _FIELDS.fullmatch(raw, 6):
        raise ImageFormatError(f"bad cpio header at offset {at}: fields must be 8 hex digits")
    return [int(raw[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]


def _name(stream: Stream, namesize: int, at: int) -> str:
    if not 1 <= namesize <= PATH_MAX:
        raise ImageFormatError(f"bad cpio name size {namesize} at offset {at}")
    stream.expect(namesize, "name")
    raw = stream.take(namesize, "name")
    if raw[-1:] != b"\0":
        raise ImageFormatError(f"cpio name at offset {at} is not NUL-terminated")
    # dracut-cpio pads the name field with NULs: the name ends at the first one
    name = raw.split(b"\0", 1)[0]
    if not name:
        raise ImageFormatError(f"empty cpio member name at offset {at}")
    stream.pad()
    return decode_name(name)


def read_entries(stream: Stream, keep: Callable[[str, int], bool] = _all) -> Iterator[Entry]:
    """The members of one archive, up to its trailer; afterwards the stream stands past the
    trailer's padding. Members for which keep(name, mode) is false are skipped, not kept."""
    while True:
        at = stream.base + stream.offset
        ino, mode, _, _, nlink, _, size, _, _, rmaj, rmin, namesize, _ = _header(
            stream.take(HEADER_LEN, "header"), at
        )
        name = _name(stream, namesize, at)
        what = f"member {printable(name)}"
        stream.expect(size, what)
        if name == TRAILER:
            stream.skip(size, what)
            stream.pad()
            return
        if keep(name, mode):
            data = stream.take(size, what)
            stream.pad()
            yield Entry(name, mode, data, nlink, ino, (rmaj, rmin))
        else:
            stream.skip(size, what)
            stream.pad()


def read_archive(data: bytes) -> List[Entry]:
    """Every member of the uncompressed archive at the start of `data`."""
    return list(read_entries(Stream(MemorySource(data))))
