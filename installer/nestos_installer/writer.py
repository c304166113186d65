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
    direct = getattr(target, "direct_fd", None)
    readinto = getattr(image, "readinto", None)
    # Decompression and disk writes overlap: this thread fills page-aligned buffers (as
    # O_DIRECT requires) while a writer thread drains full ones, so the decompressor never
    # waits on a synchronous write. Memory stays at NBUF buffers whatever the image size.
    bufs = [mmap.mmap(-1, BUFSIZE) for _ in range(NBUF)]
    views = [memoryview(b) for b in bufs]
    free: queue.Queue[int] = queue.Queue()
    full: queue.Queue[Optional[Tuple[int, int, int]]] = queue.Queue()
    for k in range(NBUF):
        free.put(k)
    failure: List[BaseException] = []

    zero_range = getattr(target, "zero_range", None)

    def put(k: int, start: int, end: int, off: int) -> None:
        aligned = (end - start) % 4096 == 0 and (off + start) % 4096 == 0
        fd = direct if (direct is not None and aligned) else target.fd
        _pwrite_all(fd, views[k][start:end], off + start)

    def drain() -> None:
        while True:
            item = full.get()
            if item is None:
                return
            k, n, off = item
            try:
                if failure:
                    pass
                elif zero_range is None:
                    put(k, 0, n, off)
                else:
                    for is_zero, start, end in _zero_runs(bufs[k], n):
                        if not (is_zero and zero_range(off + start, end - start)):
                            put(k, start, end, off)
            except BaseException as e:  # reported to the reading thread
                failure.append(e)
            free.put(k)

    writer_thread = threading.Thread(target=drain, name="nestos-image-writer", daemon=True)
    writer_thread.start()
    offset = MIB
    try:
        while not failure:
            k = free.get()
            view = views[k]
            if readinto is not None:
                n = readinto(view)
            else:  # fill the whole buffer too: aligned O_DIRECT writes, whole zero MiBs
                n = 0
                while n < BUFSIZE:
                    chunk = image.read(BUFSIZE - n)
                    if not chunk:
                        break
                    view[n : n + len(chunk)] = chunk
                    n += len(chunk)
            if n == 0:
                free.put(k)
                break
            if offset + n > limit:
                free.put(k)
                raise too_big(limit)
            full.put((k, n, offset))
            offset += n
    finally:
        full.put(None)
        writer_thread.join()
        for v in views:
            v.release()
        for b in bufs:
            b.close()
    if failure:
        raise TargetError(f"writing the image at offset {offset}") from failure[0]
    return head


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
