"""The appended initramfs archive: a newc cpio (gzip or xz with CRC32) and the concatenation of
live initrd + rootfs + our archive into the one initrd that kexec loads.

stdlib only (gzip, lzma); names are validated (relative, no `..`), parents emitted first.
"""

from __future__ import annotations

import enum
import gzip
import lzma
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from nestos_installer.errors import UsageError

NEWC_MAGIC = b"070701"


class Compression(enum.Enum):
    """How the appended archive is compressed; the kernel's xz decoder needs the CRC32 check."""

    GZIP = "gzip"
    XZ = "xz"

    def compress(self, data: bytes) -> bytes:
        if self is Compression.GZIP:
            return gzip.compress(data, compresslevel=9, mtime=0)
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)


@dataclass(frozen=True)
class Member:
    path: str  # relative, no leading slash
    data: bytes
    mode: int  # permission bits; file type is added by the writer


def _check_name(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"initramfs path {path!r} must be relative without '.' or '..'")
    return path


def _header(name: str, mode: int, size: int, nlink: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [0, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(encoded), 0]
    head = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
    return head + b"\0" * (-len(head) % 4)


def newc(members: Iterable[Member]) -> bytes:
    """An uncompressed newc archive: directories (0755) before files, root-owned, mtime 0."""
    files: Dict[str, Member] = {}
    for m in members:
        files[_check_name(m.path)] = m
    out: List[bytes] = []
    emitted = set()
    for path in sorted(files):
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in emitted:
                emitted.add(d)
                out.append(_header(d, stat.S_IFDIR | 0o755, 0, 2))
        m = files[path]
        out.append(_header(path, stat.S_IFREG | (m.mode & 0o7777), len(m.data), 1))
        out.append(m.data + b"\0" * (-len(m.data) % 4))
    out.append(_header("TRAILER!!!", 0, 0, 1))
    return b"".join(out)


def archive(members: Sequence[Member], compression: Compression = Compression.GZIP) -> bytes:
    return compression.compress(newc(members))


def concatenate(parts: Sequence[Path], extra: bytes, dest: Path) -> int:
    """Write parts + extra to dest (mode 0600), each member padded to 4 bytes with NULs.

    The kernel unpacks concatenated (compressed) cpio members in order and skips NUL padding
    between them, so later members add to or override earlier ones.
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    total = 0
    with os.fdopen(fd, "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 4 << 20)
            total += p.stat().st_size
            pad = -total % 4
            out.write(b"\0" * pad)
            total += pad
        out.write(extra)
        total += len(extra)
        out.flush()
        os.fsync(out.fileno())
    return total


def list_newc(data: bytes) -> List[Tuple[str, int, int]]:
    """(name, mode, size) of an uncompressed newc archive; used to show what we built."""
    out = []
    off = 0
    while off + 110 <= len(data):
        if data[off : off + 6] != NEWC_MAGIC:
            raise ValueError(f"bad cpio magic at offset {off}")
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_end = off + 110 + namesize
        if name_end > len(data):
            raise ValueError("cpio name runs past the end")
        name = data[off + 110 : name_end - 1].split(b"\0")[0].decode()
        off = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            break
        off += size + (-size % 4)
        out.append((name, mode, size))
    return out
