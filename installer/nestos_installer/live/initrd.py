"""Initrd archives: concatenated (gzip/xz/zstd/plain) newc cpio, read as the kernel unpacks
them, and written as one xz cpio. Imports `cpio`, `compression`, `run` (zstd) and `errors`;
compressed members are streamed and may inflate to `limit` bytes in all, never more.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import tempfile
import threading
from typing import Callable, Dict, Generator, Iterable, Iterator, List, Optional, Sequence

from nestos_installer import cpio
from nestos_installer.compression import SNIFF_LEN, Compression, Inflater, zstd_frame_end
from nestos_installer.errors import CommandFailed, ImageFormatError
from nestos_installer.outputs import write_file
from nestos_installer.run import PIPE, spawn

FILE_MODE = 0o100600
DIR_MODE = 0o040755
MAX_INFLATED = 512 << 20  # what an initrd we read may decompress to, in all
ZERO_SCAN = 1 << 20


def glob_match(path: str, globs: Sequence[str]) -> bool:
    """Shell globs where `*` also matches `/`; no globs means everything matches."""
    return not globs or any(fnmatch.fnmatchcase(path, g) for g in globs)


class Initrd:
    """An ordered-by-path set of regular files, as the kernel would unpack them."""

    def __init__(self, members: Optional[Dict[str, bytes]] = None) -> None:
        self.members: Dict[str, bytes] = dict(members or {})

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def from_bytes(
        cls, data: bytes, globs: Sequence[str] = (), limit: int = MAX_INFLATED
    ) -> Initrd:
        """Parse a (possibly concatenated, compressed, zero-padded) initrd; compressed members
        may inflate to `limit` bytes in all (ImageFormatError beyond)."""

        def keep(name: str, mode: int) -> bool:
            return stat.S_ISREG(mode) and glob_match(name, globs)

        members: Dict[str, bytes] = {}
        for entry in iter_archives(data, keep, limit):
            # later duplicates replace earlier ones, as the kernel does
            members[entry.name] = entry.data
        return cls(members)

    def get(self, path: str) -> Optional[bytes]:
        return self.members.get(path)

    def paths(self) -> List[str]:
        return sorted(self.members, key=cpio.encode_name)

    def add(self, path: str, data: bytes) -> None:
        cpio.check_member_path(path)
        self.members[path] = data

    def remove(self, path: str) -> None:
        self.members.pop(path, None)

    def remove_prefix(self, prefix: str) -> None:
        for p in [p for p in self.members if p.startswith(prefix)]:
            del self.members[p]

    def is_empty(self) -> bool:
        return not self.members

    # ---- writing ---------------------------------------------------------------------------
    def to_cpio(self) -> bytes:
        """Uncompressed newc archive: parent directories (0755) before files (0600)."""
        entries = [
            cpio.Entry(p, DIR_MODE) if is_dir else cpio.Entry(p, FILE_MODE, self.members[p])
            for p, is_dir in cpio.parents_first(self.members)
        ]
        return cpio.write(entries, trailer_nlink=0)

    def to_xz(self) -> bytes:
        """xz (preset 9, CRC32 check: the kernel's decoder rejects CRC64) of `to_cpio()`."""
        return Compression.XZ.compress(self.to_cpio())


# ---- archive iteration ---------------------------------------------------------------------

Keep = Callable[[str, int], bool]


def iter_archives(
    data: bytes, keep: Keep = lambda name, mode: True, limit: int = MAX_INFLATED
) -> Iterator[cpio.Entry]:
    """Every kept entry of every archive in `data`, in order."""
    budget = _Budget(limit)
    pos = _skip_zeros(data, 0)
    while pos < len(data):
        kind = Compression.sniff(data[pos : pos + SNIFF_LEN])
        if data[pos : pos + 6] in cpio.MAGICS:
            stream = cpio.Stream(cpio.MemorySource(data, pos), base=pos)
            yield from cpio.read_entries(stream, keep)
            end = pos + stream.offset
        elif kind is Compression.NONE:
            raise ImageFormatError(f"unknown initrd format at offset {pos}")
        else:
            end = yield from _compressed(data, pos, kind, keep, budget)
        if end <= pos:  # every archive takes bytes: the position only moves forward
            raise ImageFormatError(f"initrd archive at offset {pos} is empty")
        pos = _skip_zeros(data, end)


def _skip_zeros(data: bytes, pos: int) -> int:
    """The offset of the first non-NUL byte at or after `pos` (len(data) if none)."""
    while pos < len(data):
        window = data[pos : pos + ZERO_SCAN]
        if not _all_zero(window):
            return pos + len(window) - len(window.lstrip(b"\0"))
        pos += len(window)
    return len(data)


def _all_zero(chunk: bytes) -> bool:
    return chunk == bytes(len(chunk))  # a memcmp: 10x faster than bytes.count or strip


def _compressed(
    data: bytes, pos: int, kind: Compression, keep: Keep, budget: _Budget
) -> Generator[cpio.Entry, None, int]:
    """The entries of the compressed archive at `pos`; returns the offset after it."""
    if kind is Compression.ZSTD:
        end = zstd_frame_end(data, pos)
        with _ZstdFrame(memoryview(data)[pos:end]) as frame:
            yield from _entries_then_zeros(_Counted(frame.read, budget), keep)
        return end
    inflater = Inflater(kind, cpio.MemorySource(data, pos).read)
    yield from _entries_then_zeros(_Counted(inflater.read, budget), keep)
    return pos + inflater.member_length()


def _entries_then_zeros(source: cpio.Source, keep: Keep) -> Iterator[cpio.Entry]:
    """One archive, then only NUL padding up to the end of the decompressed data."""
    stream = cpio.Stream(source)
    yield from cpio.read_entries(stream, keep)
    for chunk in stream.rest():
        if not _all_zero(chunk):
            raise ImageFormatError("found trailing garbage inside compressed archive")


class _Budget:
    """How many bytes the compressed members of one initrd may still inflate to."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def check(self, more: int) -> None:
        if self.spent + more > self.limit:
            raise ImageFormatError(
                f"initrd decompresses to more than {_size(self.limit)}; refusing to read on",
                hint="a real initrd is far smaller: this one is damaged or hostile",
            )


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


class _Counted(cpio.Source):
    """A decompressed stream whose every byte is paid from the budget."""

    def __init__(self, read: Callable[[int], bytes], budget: _Budget) -> None:
        self._read = read
        self.budget = budget

    def read(self, n: int) -> bytes:
        n = min(n, self.budget.limit - self.budget.spent + 1)
        chunk = self._read(max(n, 1))
        self.budget.check(len(chunk))
        self.budget.spent += len(chunk)
        return chunk

    def expect(self, n: int, what: str) -> None:
        self.budget.check(n)


class _ZstdFrame:
    """One zstd frame decompressed by the `zstd` program, read in pieces from its stdout;
    a feeder thread writes the frame. Leaving the with-block kills and reaps the program."""

    ARGV = ["zstd", "-d", "-c", "-q"]

    def __init__(self, frame: memoryview) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        try:
            self.proc = spawn(
                self.ARGV,
                stdin=PIPE,
                stdout=PIPE,
                stderr=self._stderr,
                reason="decompress a zstd initrd archive",
            )
        except BaseException:
            self._stderr.close()
            raise
        self._feeder = threading.Thread(target=self._feed, args=(frame,), daemon=True)
        self._feeder.start()

    def _feed(self, frame: memoryview) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(frame)
        except (BrokenPipeError, ValueError):
            pass  # zstd quit (or was killed): its exit status says why
        finally:
            try:
                stdin.close()
            except (BrokenPipeError, OSError):
                pass

    def read(self, n: int) -> bytes:
        stdout = self.proc.stdout
        assert stdout is not None
        chunk = os.read(stdout.fileno(), n)
        if not chunk and self.proc.wait() != 0:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace")
            cause = CommandFailed(self.ARGV, self.proc.returncode, tail)
            raise ImageFormatError("zstd: compressed data is corrupt or truncated") from cause
        return chunk

    def __enter__(self) -> _ZstdFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._feeder.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


# ---- extraction ----------------------------------------------------------------------------


def extract(initrd: Initrd, directory: str, raw_names: Iterable[str]) -> List[str]:
    """Write each named member under `directory`, creating files exclusively."""
    written = []
    for name in raw_names:
        cpio.check_member_path(name)
        dest = os.path.join(directory, name)
        parent = os.path.dirname(dest)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # Ignition configs may hold secrets
        write_file(dest, initrd.members[name], secret=name.endswith(".ign"))
        written.append(dest)
    return written
