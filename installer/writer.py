"""Writing a decompressed image stream onto a target: the first MiB is held back and written
only after the caller's verification passed; everything else streams from offset 1 MiB with
big buffers; the image may not run past the disk (or into a saved partition).

Pure policy on a pwrite-able target: no ioctls, no subprocess, testable on a regular file.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Callable, Optional, Protocol

from nestos_installer.errors import ImageFormatError, TargetError
from nestos_installer.gpt import check_sector_size
from nestos_installer.pipeline.readers import BUFSIZE, read_exactly

MIB = 1 << 20


class Writable(Protocol):
    fd: int

    def pwrite(self, data: bytes, offset: int) -> None: ...


def _too_big(limit: int, what: str) -> Callable[[int], Exception]:
    def make(offset: int) -> Exception:
        return TargetError(f"image is larger than {what} ({limit} bytes); stopped at the limit",
                           hint="use a bigger disk")
    return make


def stream_image(image: Any, target: Writable, *, limit: int, sector_size: int,
                 limit_what: str = "the destination disk",
                 limit_error: Optional[Callable[[int], Exception]] = None) -> bytes:
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
    buf = mmap.mmap(-1, BUFSIZE)  # page-aligned, as O_DIRECT requires
    view = memoryview(buf)
    readinto = getattr(image, "readinto", None)
    offset = MIB
    try:
        while True:
            if readinto is not None:
                n = readinto(view)
            else:
                chunk = image.read(BUFSIZE)
                n = len(chunk)
                view[:n] = chunk
            if n == 0:
                break
            if offset + n > limit:
                raise too_big(limit)
            fd = direct if (direct is not None and n % 4096 == 0) else target.fd
            _pwrite_all(fd, view[:n], offset)
            offset += n
    finally:
        view.release()
        buf.close()
    return head


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def commit_head(target: Writable, head: bytes) -> None:
    """Write the held-back first MiB (MBR, GPT): from here on the disk is bootable."""
    target.pwrite(head, 0)
