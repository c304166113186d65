"""Composable byte readers: tee, hash, count, limit, peek, plus copy helpers.

A "reader" is any object with `read(n: int = -1) -> bytes` (b"" only at EOF; short reads are
allowed anywhere else). Pure Python over `hashlib`; imports nothing from the project but errors.
"""

from __future__ import annotations

import hashlib
from typing import Callable, List, Optional, Protocol, Sequence

BUFSIZE = 4 << 20
"""Default chunk size of the pipeline: big reads keep per-chunk Python work negligible."""


class Reader(Protocol):
    """Anything with a file-like `read`; n < 0 means "everything up to EOF"."""

    def read(self, n: int = -1) -> bytes: ...


def read_all(reader: Reader, bufsize: int = BUFSIZE) -> bytes:
    """Read `reader` to EOF in `bufsize` chunks and return the concatenation."""
    parts: List[bytes] = []
    while True:
        chunk = reader.read(bufsize)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def read_exactly(reader: Reader, n: int) -> bytes:
    """Read exactly `n` bytes; a shorter result means EOF came first."""
    if n <= 0:
        return b""
    first = reader.read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        chunk = reader.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def copy_stream(reader: Reader, write: Callable[[bytes], object], bufsize: int = BUFSIZE) -> int:
    """Pass every chunk of `reader` to `write` until EOF; return the byte count."""
    total = 0
    while True:
        chunk = reader.read(bufsize)
        if not chunk:
            return total
        write(chunk)
        total += len(chunk)


class TeeReader:
    """Hands every chunk read from `inner` to each sink, in order, before returning it."""

    def __init__(self, inner: Reader, sinks: Sequence[Callable[[bytes], object]]) -> None:
        self.inner = inner
        self.sinks = list(sinks)
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        chunk = self.inner.read(n)
        if chunk:
            for sink in self.sinks:
                sink(chunk)
        elif n != 0:
            self.eof = True
        return chunk


class HashingReader:
    """Digests (hashlib `algorithm`) every byte read through it."""

    def __init__(self, inner: Reader, algorithm: str = "sha256") -> None:
        self.inner = inner
        self._hash = hashlib.new(algorithm)

    def read(self, n: int = -1) -> bytes:
        chunk = self.inner.read(n)
        self._hash.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def digest(self) -> bytes:
        return self._hash.digest()


class CountingReader:
    """Counts the bytes read through it in `.count`."""

    def __init__(self, inner: Reader) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.inner.read(n)
        self.count += len(chunk)
        return chunk


class LimitReader:
    """Passes at most `limit` bytes; data beyond the limit raises `error(limit)`.

    At the limit it reads one more byte from `inner`: EOF there is fine, anything else means the
    stream is longer than allowed (image larger than the disk, image overlapping a saved
    partition).
    """

    def __init__(self, inner: Reader, limit: int, error: Callable[[int], Exception]) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.inner = inner
        self.limit = limit
        self.error = error
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return read_all(self)
        if n == 0:
            return b""
        allowed = self.limit - self.count
        if allowed == 0:
            if self.inner.read(1):
                raise self.error(self.limit)
            return b""
        chunk = self.inner.read(min(n, allowed))
        self.count += len(chunk)
        return chunk


class PeekReader:
    """Lets the caller look at upcoming bytes (`peek`) without consuming them."""

    def __init__(self, inner: Reader) -> None:
        self.inner = inner
        self._buf = b""
        self._eof = False

    def peek(self, n: int) -> bytes:
        """Up to `n` upcoming bytes (fewer only at EOF); they are still returned by `read`."""
        if len(self._buf) < n and not self._eof:
            parts = [self._buf]
            have = len(self._buf)
            while have < n:
                chunk = self.inner.read(max(n - have, 0))
                if not chunk:
                    self._eof = True
                    break
                parts.append(chunk)
                have += len(chunk)
            self._buf = b"".join(parts)
        return self._buf[:n]

    def read(self, n: int = -1) -> bytes:
        buf = self._buf
        if not buf:
            if self._eof:
                return b""
            return self.inner.read(n)
        if n < 0:
            self._buf = b""
            return buf + (b"" if self._eof else read_all(self.inner))
        if n >= len(buf):
            self._buf = b""
            return buf
        self._buf = buf[n:]
        return buf[:n]


class BytesReader:
    """A reader over an in-memory buffer (memoryview slices, no up-front copy)."""

    def __init__(self, data: bytes, chunk: Optional[int] = None) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._view) - self._pos
        if self._chunk is not None:
            n = min(n, self._chunk)
        out = bytes(self._view[self._pos : self._pos + n])
        self._pos += len(out)
        return out
