"""Decompression chosen by magic bytes (gzip, xz, zstd, none), streamed, refusing trailing data.

The input must be consumed to EOF exactly once, because the caller tees it into the signature
verifier. External decoders (`xz -T0`, `zstd`) go through `run.spawn`; no subprocess here.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import zlib
from contextlib import contextmanager
from typing import IO, Callable, Deque, Iterator, List, Optional

from nestos_installer.compression import GZIP_MAGIC, SNIFF_LEN, XZ_MAGIC, Compression, Inflater
from nestos_installer.errors import CommandFailed, ImageFormatError, NestosError
from nestos_installer.pipeline.readers import (
    BUFSIZE,
    BytesReader,
    LimitReader,
    PeekReader,
    Reader,
    read_all,
)
from nestos_installer.run import PIPE, have_tool, output, spawn

log = logging.getLogger(__name__)

TRAILING = "found trailing data after compressed stream"
PIPE_SIZE = 1 << 20  # the decoder's stdin and stdout pipes
XZ_MT_VERSION = 50040000  # xz >= 5.4.0 decompresses multi-block files in parallel


_probe_lock = threading.Lock()
_xz_mt: Optional[bool] = None


def xz_supports_threads() -> bool:
    """True when an `xz` >= 5.4 (parallel decompression) is on PATH (asked once per process)."""
    global _xz_mt
    with _probe_lock:
        if _xz_mt is None:
            _xz_mt = _probe_xz()
        return _xz_mt


def probe_in_background() -> None:
    """Ask `xz --version` now, in a thread, so the stream does not wait for it later."""
    threading.Thread(target=xz_supports_threads, name="xz-probe", daemon=True).start()


def _probe_xz() -> bool:
    if not have_tool("xz"):
        return False
    try:
        text = output(["xz", "--robot", "--version"], timeout=30)
    except NestosError:
        return False
    for line in text.splitlines():
        if line.startswith("XZ_VERSION="):
            try:
                return int(line.split("=", 1)[1]) >= XZ_MT_VERSION
            except ValueError:
                return False
    return False


class _Decoder:
    """Base of the readers yielded by `decompressed`: EOF bookkeeping and the exit checks."""

    def __init__(self) -> None:
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            everything: bytes = read_all(self)
            return everything
        if n == 0 or self.eof:
            return b""
        chunk = self._read(min(n, BUFSIZE))
        if not chunk:
            self._finish()
            self.eof = True
        return chunk

    def readinto(self, buf: memoryview) -> int:
        """Fill `buf` as far as possible; short only at the end of the data (for writers that
        need whole, aligned blocks, e.g. O_DIRECT)."""
        total = 0
        while total < len(buf) and not self.eof:
            n = self._readinto(buf[total:])
            if n == 0:
                self._finish()
                self.eof = True
                break
            total += n
        return total

    def _readinto(self, buf: memoryview) -> int:
        chunk = self._read(min(len(buf), BUFSIZE))
        buf[: len(chunk)] = chunk
        return len(chunk)

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def _finish(self) -> None:
        """Called once at the end of the decompressed data; raises if the input was not clean."""

    def close(self) -> None:
        """Normal exit from the with-block: the consumer must have read to EOF."""
        if not self.eof and self.read(1):
            self.abort()
            raise NestosError("internal error: decompressed image was not read to the end")

    def abort(self) -> None:
        """Stop early (the consumer raised); release processes and threads."""


class _Passthrough(_Decoder):
    def __init__(self, source: Reader) -> None:
        super().__init__()
        self.source = source

    def _read(self, n: int) -> bytes:
        chunk: bytes = self.source.read(n)
        return chunk


class _InProcess(_Decoder):
    """gzip (zlib, multi-member) or xz (stdlib lzma, concatenated streams + padding)."""

    def __init__(self, source: Reader, kind: Compression) -> None:
        super().__init__()
        self.source = source
        self.kind = kind
        self._member = Inflater(kind, source.read, chunk=BUFSIZE)

    def _read(self, n: int) -> bytes:
        while True:
            out = self._member.read(n)
            if out:
                return out
            if not self._next_member(self._member.unused):
                return b""

    def _next_member(self, rest: bytes) -> bool:
        """After one stream/member ended: start the next one, or reach a clean EOF."""
        magic = XZ_MAGIC if self.kind is Compression.XZ else GZIP_MAGIC
        zeros = 0
        while True:
            if self.kind is Compression.XZ:
                # xz stream padding: NUL bytes, a multiple of four, between or after streams.
                stripped = rest.lstrip(b"\0")
                zeros += len(rest) - len(stripped)
                rest = stripped
            if len(rest) >= len(magic) or (rest and not magic.startswith(rest)):
                break
            more = self.source.read(BUFSIZE)
            if not more:
                break
            rest += more
        if not rest and zeros % 4 == 0:
            return False
        if zeros % 4 or not rest.startswith(magic):
            raise ImageFormatError(TRAILING)
        self._member = Inflater(self.kind, self.source.read, pending=rest, chunk=BUFSIZE)
        return True


class _XzFooterScanner:
    """Tells, after the xz program failed, whether the failure was data after a complete stream.

    xz itself only says "corrupt" or "unexpected end". The feeder hands every raw chunk over; we
    keep references to the most recent WINDOW bytes (no copy, no work per chunk: scanning the
    whole image costs ~1 CPU-s per GiB) and look for the last xz Stream Footer in them only when
    xz failed. A footer is `CRC32(4) size(4) 00 0X "YZ"` with the CRC over the middle six bytes,
    so a false match is a 1-in-2^32 event per "YZ". xz quits within a few MiB of input after
    the garbage starts, so the footer is still in the window; if it is not, the error stays
    xz's own "corrupt", which refuses the image just the same.
    """

    WINDOW = 8 << 20

    def __init__(self) -> None:
        self._recent: Deque[bytes] = collections.deque()
        self._kept = 0

    def update(self, chunk: bytes) -> None:
        self._recent.append(chunk)
        self._kept += len(chunk)
        while len(self._recent) > 1 and self._kept - len(self._recent[0]) >= self.WINDOW:
            self._kept -= len(self._recent.popleft())

    @staticmethod
    def _last_footer_end(data: bytes) -> Optional[int]:
        i = data.rfind(b"YZ")
        while i >= 10:
            if (
                data[i - 2] == 0
                and data[i - 1] < 16
                and zlib.crc32(data[i - 6 : i]) == int.from_bytes(data[i - 10 : i - 6], "little")
            ):
                return i + 2
            i = data.rfind(b"YZ", 0, i)
        return None

    def trailing(self) -> bool:
        """Data follows a complete stream and it is not the start of another xz stream."""
        window = b"".join(self._recent)
        end = self._last_footer_end(window)
        if end is None or end >= len(window):
            return False
        return not window[end : end + 64].lstrip(b"\0").startswith(XZ_MAGIC)


class _Process(_Decoder):
    """An external decoder fed from a thread; we read its stdout in large blocks."""

    def __init__(
        self,
        argv: List[str],
        source: Reader,
        classify: Callable[[str], Optional[str]],
        scanner: Optional[_XzFooterScanner] = None,
    ) -> None:
        super().__init__()
        self.argv = argv
        self.source = source
        self.classify = classify
        self.scanner = scanner
        self.input_eof = False
        self.feed_error: Optional[BaseException] = None
        self._outcome: Optional[BaseException] = None
        self._finished = False
        self.proc = spawn(
            argv,
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
            reason=f"decompress the image ({argv[0]})",
            pipe_size=PIPE_SIZE,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        self._stdout: IO[bytes] = stdout
        self._fd = stdout.fileno()  # read unbuffered: no copy through a BufferedReader
        self.feeder = threading.Thread(target=self._feed, name=f"{argv[0]}-feeder", daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while True:
                chunk = self.source.read(BUFSIZE)
                if not chunk:
                    self.input_eof = True
                    break
                if self.scanner is not None:
                    self.scanner.update(chunk)
                stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            pass  # the decoder quit (or was killed): its exit status says why
        except BaseException as e:  # re-raised in the consumer's thread by _finish
            self.feed_error = e
        finally:
            try:
                stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def _read(self, n: int) -> bytes:
        return os.read(self._fd, n)

    def _readinto(self, buf: memoryview) -> int:
        return os.readv(self._fd, [buf])

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._outcome = self._settle()
        if self._outcome is not None:
            raise self._outcome

    def _settle(self) -> Optional[BaseException]:
        rc = self.proc.wait()
        self.feeder.join()
        stderr = self.proc.stderr.read() if self.proc.stderr else b""
        self._close_pipes()
        if self.feed_error is not None:
            return self.feed_error
        if rc != 0:
            text = stderr.decode(errors="replace").strip()
            cause = CommandFailed(self.argv, rc, text)
            if self.scanner is not None and self.scanner.trailing():
                message = TRAILING
            else:
                message = self.classify(text) or f"{self.argv[0]}: {_last_line(text)}"
            err: BaseException = ImageFormatError(message)
            err.__cause__ = cause
            return err
        if not self.input_eof:
            early: BaseException = ImageFormatError(f"{self.argv[0]} stopped before input EOF")
            return early
        return None

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # The feeder's next write fails (EPIPE) and it exits; it can only hang inside a source
        # read, which has its own timeouts. Never wait forever on it.
        self.feeder.join(timeout=60)
        if self.feeder.is_alive():
            log.warning("decompressor feeder thread still blocked reading the source")
        self._finished = True
        self._close_pipes()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed"


def _classify_xz(text: str) -> Optional[str]:
    if "Unexpected end of input" in text:
        return "xz: compressed stream is truncated"
    if "corrupt" in text:
        return "xz: compressed data is corrupt"
    return None


def _classify_zstd(text: str) -> Optional[str]:
    # The first frame's magic was sniffed already, so an unknown header is a later "frame".
    if "unsupported format" in text or "unknown header" in text:
        return TRAILING
    if "premature end" in text or "truncated" in text:
        return "zstd: compressed stream is truncated"
    if "corrupt" in text.lower() or "checksum" in text.lower():
        return "zstd: compressed data is corrupt"
    return None


@contextmanager
def decompressed(
    reader: Reader, *, threads: int = 0, use_cli: Optional[bool] = None
) -> Iterator[Reader]:
    """Yield a reader of the decompressed bytes of `reader`, format decided by magic bytes.

    Read the yielded reader until b"" before leaving the block: reaching its end checks that the
    input ended cleanly (no trailing data; input read to EOF) and raises ImageFormatError if not.
    `threads` is xz's -T value (0 = all cores). `use_cli` forces (True) or forbids (False) the xz
    program; None picks it when it can decompress in parallel.
    """
    peek = reader if isinstance(reader, PeekReader) else PeekReader(reader)
    kind = Compression.sniff(peek.peek(SNIFF_LEN))
    log.debug("image compression: %s", kind.value)
    dec: _Decoder
    if kind is Compression.NONE:
        dec = _Passthrough(peek)
    elif kind is Compression.GZIP:
        dec = _InProcess(peek, kind)
    elif kind is Compression.XZ:
        cli = xz_supports_threads() if use_cli is None else use_cli
        if cli:
            argv = ["xz", "-dcq", f"-T{max(threads, 0)}"]
            dec = _Process(argv, peek, _classify_xz, _XzFooterScanner())
        else:
            dec = _InProcess(peek, kind)
    else:
        dec = _Process(["zstd", "-dcq"], peek, _classify_zstd)
    try:
        yield dec
    except BaseException:
        dec.abort()
        raise
    dec.close()


def decompress_bytes(
    data: bytes, *, use_cli: Optional[bool] = None, limit: Optional[int] = None
) -> bytes:
    """Decompress a small in-memory blob (same rules: magic bytes, no trailing data); more than
    `limit` bytes of output is an ImageFormatError."""
    with decompressed(BytesReader(data), use_cli=use_cli) as r:
        if limit is None:
            out: bytes = read_all(r)
        else:
            out = read_all(LimitReader(r, limit, _too_large))
    return out


def _too_large(limit: int) -> Exception:
    return ImageFormatError(f"data decompresses to more than {limit} bytes")
