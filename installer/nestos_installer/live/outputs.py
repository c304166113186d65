"""Where a modified image goes: in place (pwrite), a new file (published by `outputs`, no
clobber) or a stream. Imports `errors` and `outputs` only.

The three forms produce byte-identical results; every write is checked against the image size
before the first byte changes.
"""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO, List, Optional, Sequence, Tuple

from nestos_installer.errors import ImageFormatError
from nestos_installer.outputs import new_file, refuse_existing, write_file

Write = Tuple[int, bytes]
CHUNK = 1 << 20


def check_writes(size: int, writes: Sequence[Write]) -> List[Write]:
    """Sort writes by offset; refuse any outside [0, size) or overlapping another."""
    out = sorted(writes, key=lambda w: w[0])
    prev_end = 0
    for off, data in out:
        if off < 0 or off + len(data) > size:
            raise ImageFormatError(f"write at {off}+{len(data)} is outside the image")
        if off < prev_end:
            raise ImageFormatError(f"overlapping writes at offset {off}")
        prev_end = off + len(data)
    return out


def write_in_place(path: str, writes: Sequence[Write]) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        checked = check_writes(os.fstat(fd).st_size, writes)
        for off, data in checked:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], off + done)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(src: str, dest: str, writes: Sequence[Write]) -> None:
    """Copy `src` to a new file `dest` with the regions substituted (mode 0600: the output may
    carry an Ignition config with secrets)."""
    refuse_existing(dest)  # before checking and copying a whole ISO
    checked = check_writes(os.path.getsize(src), writes)
    with new_file(dest, secret=True) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out.file, CHUNK)
        for off, data in checked:
            out.file.seek(off)
            out.file.write(data)


def stream_copy(src: str, out: BinaryIO, writes: Sequence[Write]) -> None:
    """Write `src` with the regions substituted to `out`."""
    with open(src, "rb") as inp:
        size = os.fstat(inp.fileno()).st_size
        checked = check_writes(size, writes)
        pos = 0
        for off, data in checked:
            _copy_range(inp, out, pos, off)
            out.write(data)
            pos = off + len(data)
        _copy_range(inp, out, pos, size)
    out.flush()


def _copy_range(inp: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    inp.seek(start)
    left = end - start
    while left > 0:
        buf = inp.read(min(CHUNK, left))
        if not buf:
            raise ImageFormatError("image shrank while copying")
        out.write(buf)
        left -= len(buf)


def apply(
    src: str, writes: Sequence[Write], output: Optional[str], stdout: Optional[BinaryIO] = None
) -> None:
    """In place (output None), to stdout (`-`), or to a new file."""
    if output is None:
        write_in_place(src, writes)
    elif output == "-":
        if stdout is None:
            raise ValueError("stdout stream required for '-'")
        stream_copy(src, stdout, writes)
    else:
        write_new_file(src, output, writes)


def write_bytes_output(data: bytes, output: str, stdout: Optional[BinaryIO] = None) -> None:
    """Small generated outputs (PXE cpio): stdout or a new file of mode 0600 (these archives
    usually carry an Ignition config)."""
    if output == "-":
        if stdout is None:
            raise ValueError("stdout stream required for '-'")
        stdout.write(data)
        stdout.flush()
        return
    write_file(output, data, secret=True)
