"""Writing a decompressed image stream onto a target: the first MiB is held back and written
only after the caller's verification passed; everything else streams from offset 1 MiB with
big buffers (whole MiBs of zeros are zeroed by the target when it can, not written); the image
may not run past the disk (or into a saved partition).

Pure policy on a pwrite-able target: no ioctls, no subprocess, testable on a regular file.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from typing import Any, Callable, List, Optional, Protocol, Tuple

from nestos_installer.errors import ImageFormatError, TargetError
from nestos_installer.gpt import check_sector_size
from nestos_installer.pipeline.readers import BUFSIZE, read_exactly

MIB = 1 << 20
NBUF = 4  # image buffers in flight between decompression and disk writes


class Writable(Protocol):
    fd: int

    def pwrite(self, data: bytes, offset: int) -> None: ...


def _too_big(limit: int, what: str) -> Callable[[int], Exception]:
    def make(offset: int) -> Exception:
        return TargetError(
            f"image is larger than {what} ({limit} bytes); stopped at the limit",
            hint="use a bigger disk",
        )

    return make


def stream_image(
    image: Any,
    target: Writable,
    *,
    limit: int,
    sector_size: int,
    limit_what: str = "the destination disk",
    limit_error: Optional[Callable[[int], Exception]] = None,
) -> bytes:
    """Copy `image` (decompressed reader) to target from 1 MiB on; return the first MiB.

    `limit` is the number of bytes the image may occupy (disk size, or the offset of the first
    saved partition). Reads `image` to EOF. Whole aligned blocks go through the target's
    O_DIRECT descriptor when it has one; the tail goes through the ordinary one.
    """
    head = read_exactly(image, MIB)
    if len(head) < MIB:
        raise ImageFormatError(f"decoding first MiB of image: image is only {len(head)} bytes")
    check_sector_size(head, sector_size)
    if limit < MIB:
        raise TargetError(f"destination is smaller than 1 MiB ({limit} bytes)")
    too_big = limit_error or _too_big(limit, limit_what)
    offset = MIB
    with _WritePool(target) as pool:
        while not pool.failure:
            k, n = pool.fill(image)
            if n == 0:
                pool.give_back(k)
                break
            if offset + n > limit:
                pool.give_back(k)
                raise too_big(limit)
            pool.submit(k, n, offset)
            offset += n
    if pool.failure:
        raise TargetError(f"writing the image at offset {offset}") from pool.failure[0]
    return head


class _WritePool:
    """Decompression and disk writes overlap: the caller fills page-aligned buffers (as O_DIRECT
    requires) while a writer thread drains full ones, so the decompressor never waits on a
    synchronous write. Memory stays at NBUF buffers whatever the image size."""

    def __init__(self, target: Writable) -> None:
        self.target = target
        self.direct: Optional[int] = getattr(target, "direct_fd", None)
        self.zero_range: Optional[Callable[[int, int], bool]] = getattr(target, "zero_range", None)
        self.bufs = [mmap.mmap(-1, BUFSIZE) for _ in range(NBUF)]
        self.views = [memoryview(b) for b in self.bufs]
        self.free: queue.Queue[int] = queue.Queue()
        self.full: queue.Queue[Optional[Tuple[int, int, int]]] = queue.Queue()
        for k in range(NBUF):
            self.free.put(k)
        self.failure: List[BaseException] = []
        self.thread = threading.Thread(target=self._drain, name="nestos-image-writer", daemon=True)

    def __enter__(self) -> _WritePool:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.full.put(None)
        self.thread.join()
        for v in self.views:
            v.release()
        for b in self.bufs:
            b.close()

    def fill(self, image: Any) -> Tuple[int, int]:
        """A free buffer filled from `image`: (buffer index, bytes read; 0 at EOF)."""
        k = self.free.get()
        view = self.views[k]
        readinto = getattr(image, "readinto", None)
        if readinto is not None:
            return k, int(readinto(view))
        n = 0  # fill the whole buffer too: aligned O_DIRECT writes, whole zero MiBs
        while n < BUFSIZE:
            chunk = image.read(BUFSIZE - n)
            if not chunk:
                break
            view[n : n + len(chunk)] = chunk
            n += len(chunk)
        return k, n

    def give_back(self, k: int) -> None:
        self.free.put(k)

    def submit(self, k: int, n: int, offset: int) -> None:
        self.full.put((k, n, offset))

    def _put(self, k: int, start: int, end: int, off: int) -> None:
        aligned = (end - start) % 4096 == 0 and (off + start) % 4096 == 0
        fd = self.direct if (self.direct is not None and aligned) else self.target.fd
        _pwrite_all(fd, self.views[k][start:end], off + start)

    def _write(self, k: int, n: int, off: int) -> None:
        if self.zero_range is None:
            self._put(k, 0, n, off)
            return
        for is_zero, start, end in _zero_runs(self.bufs[k], n):
            if not (is_zero and self.zero_range(off + start, end - start)):
                self._put(k, start, end, off)

    def _drain(self) -> None:
        while True:
            item = self.full.get()
            if item is None:
                return
            k, n, off = item
            try:
                if not self.failure:
                    self._write(k, n, off)
            except BaseException as e:  # reported to the reading thread
                self.failure.append(e)
            self.free.put(k)


_ZERO_MIB = bytes(MIB)


def _zero_runs(buf: mmap.mmap, n: int) -> List[Tuple[bool, int, int]]:
    """Split buf[:n] into maximal runs of whole all-zero MiBs and of other data.

    Disk images are largely unused space; those MiBs are zeroed by the device instead of
    sent (writer thread, in order with the writes). A MiB with any data in its first bytes
    is told apart at once; only zero candidates are compared in full. A short tail counts
    as data.
    """
    runs: List[Tuple[bool, int, int]] = []
    for start in range(0, n, MIB):
        end = min(start + MIB, n)
        is_zero = (
            end - start == MIB
            and buf[start : start + 64] == _ZERO_MIB[:64]
            and buf[start:end] == _ZERO_MIB
        )
        if runs and runs[-1][0] == is_zero:
            runs[-1] = (is_zero, runs[-1][1], end)
        else:
            runs.append((is_zero, start, end))
    return runs


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def commit_head(target: Writable, head: bytes) -> None:
    """Write the held-back first MiB (MBR, GPT): from here on the disk is bootable."""
    target.pwrite(head, 0)
