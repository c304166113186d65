"""The appended initramfs archive: a newc cpio (gzip or xz with CRC32) and the concatenation of
live initrd + rootfs + our archive into the one initrd that kexec loads.

stdlib + `nestos_installer.cpio`/`compression` only; names are validated (relative, no `.` or
`..`), parents emitted first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, Sequence, cast

from nestos_installer import cpio
from nestos_installer.compression import Compression as Compression  # re-exported for cli, plan
from nestos_installer.errors import UsageError


@dataclass(frozen=True)
class Member:
    path: str  # relative, no leading slash
    data: bytes
    mode: int  # permission bits; file type is added by the writer


def _check_name(path: str) -> str:
    problem = cpio.path_problem(path, normalized=True)
    if problem is not None:
        raise UsageError(f"initramfs path {cpio.printable(path)!r} {problem}")
    return path


def newc(members: Iterable[Member]) -> bytes:
    """An uncompressed newc archive: directories (0755) before files, root-owned, mtime 0."""
    files: Dict[str, Member] = {}
    for m in members:
        files[_check_name(m.path)] = m
    entries = [
        cpio.Entry(path, stat.S_IFDIR | 0o755, nlink=2)
        if is_dir
        else cpio.Entry(path, stat.S_IFREG | (files[path].mode & 0o7777), files[path].data)
        for path, is_dir in cpio.parents_first(files)
    ]
    return cpio.write(entries)


def archive(members: Sequence[Member], compression: Compression = Compression.GZIP) -> bytes:
    return compression.compress(newc(members))


class Sink:
    """A write-only stream that counts and hashes (sha256) what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


Part = Callable[[BinaryIO], None]  # writes one piece of the combined initrd to its argument


def combine(parts: Iterable[Part], extra: bytes, out: BinaryIO) -> Sink:
    """Write each part, then `extra`, to out: each part padded to 4 bytes with NULs.

    The kernel unpacks concatenated (compressed) cpio members in order and skips NUL padding
    between them, so later members add to or override earlier ones.
    """
    sink = Sink(out)
    for write in parts:
        write(cast(BinaryIO, sink))
        sink.write(b"\0" * (-sink.size % 4))
    sink.write(extra)
    return sink


def file_part(path: Path) -> Part:
    def write(out: BinaryIO) -> None:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, out, 4 << 20)

    return write


def concatenate(parts: Sequence[Path], extra: bytes, dest: Path) -> int:
    """Write the files `parts` + extra to dest (mode 0600) as combine() does; fsync'd."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        sink = combine([file_part(p) for p in parts], extra, out)
        out.flush()
        os.fsync(out.fileno())
    return sink.size
