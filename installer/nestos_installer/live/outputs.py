"""Where a modified image goes: in place (pwrite), a new file (temp + no-clobber) or a stream.

Imports `errors` only. The three forms produce byte-identical results; every write is checked
against the image size before the first byte changes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import BinaryIO, List, Optional, Sequence, Tuple

from nestos_installer.errors import ImageFormatError

Write = Tuple[int, bytes]
TEMP_PREFIX = ".nestos-installer-temp-"
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


def no_clobber_rename(tmp: str, dest: str) -> None:
    """Give `tmp` the name `dest` unless `dest` exists (FileExistsError, "File exists")."""
    try:
        os.link(tmp, dest)
    finally:
        os.unlink(tmp)


def write_new_file(src: str, dest: str, writes: Sequence[Write]) -> None:
    """Copy `src` to a temp file next to `dest`, patch it, then rename it no-clobber."""
    if os.path.lexists(dest):
        raise FileExistsError(17, "File exists", dest)
    checked = check_writes(os.path.getsize(src), writes)
    directory = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, CHUNK)
            for off, data in checked:
                out.seek(off)
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # stays 0600 (mkstemp): the output may carry an Ignition config with secrets
    except BaseException:
        os.unlink(tmp)
        raise
    no_clobber_rename(tmp, dest)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def write_bytes_output(
    data: bytes, output: str, stdout: Optional[BinaryIO] = None, mode: int = 0o600
) -> None:
    """Small generated outputs (PXE cpio): stdout or temp + no-clobber rename.

    Default mode 0600: these archives usually carry an Ignition config.
    """
    if output == "-":
        if stdout is None:
            raise ValueError("stdout stream required for '-'")
        stdout.write(data)
        stdout.flush()
        return
    if os.path.lexists(output):
        raise FileExistsError(17, "File exists", output)
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    no_clobber_rename(tmp, output)
