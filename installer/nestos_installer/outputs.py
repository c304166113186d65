"""Output files: written to a temp file in the destination directory with the final mode,
fsynced, then published under their name without ever replacing an existing file.

Standard library only and Python 3.7+ (bundled in the x2nestos zipapp); imports `errors` only.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from nestos_installer.errors import NestosError, OutputExists

TEMP_PREFIX = ".nestos-installer-temp-"
"""Temp files start with this: a half-written output is never mistaken for a real one."""

PathLike = Union[str, "os.PathLike[str]"]

# What link(2) answers where a filesystem has no hard links (vfat, some FUSE and network ones).
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


@dataclass(frozen=True)
class Pending:
    """An output being written: `file` is open on the temp file at `path`."""

    file: BinaryIO
    path: Path


def refuse_existing(dest: PathLike) -> None:
    """OutputExists if `dest` exists (even as a dangling symlink): checked before long work.

    Only a check: the publish itself is what guarantees that nothing is replaced.
    """
    if os.path.lexists(dest):
        raise OutputExists(dest)


@contextmanager
def new_file(dest: PathLike, *, secret: bool = False, replace: bool = False) -> Iterator[Pending]:
    """A file that appears as `dest` only when the block completes.

    The temp file sits next to `dest` with its final mode from the start: 0600 when `secret`
    (it may carry an Ignition config or keys), else 0666 & ~umask. On a clean exit it is
    fsynced and published without replacing anything (OutputExists if `dest` appeared
    meanwhile); `replace=True` is for callers whose documented behaviour is to overwrite.
    On any failure the temp file is removed.
    """
    if not replace:
        refuse_existing(dest)
    directory = os.path.dirname(os.path.abspath(dest))
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    except OSError as e:  # the message would name the temp file, not the output
        raise NestosError(f"cannot create {dest}: {e.strerror or e}") from None
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if not secret:
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            yield Pending(f, temp)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(temp, dest)
        else:
            _publish(temp, dest)
    except BaseException:
        _remove(temp)
        raise


def write_file(dest: PathLike, data: bytes, *, secret: bool = False, replace: bool = False) -> None:
    """`data` as the new file `dest` (see new_file)."""
    with new_file(dest, secret=secret, replace=replace) as out:
        out.file.write(data)


def _publish(temp: Path, dest: PathLike) -> None:
    """Give `temp` the name `dest` unless that name exists: link(2) then unlink, or where the
    filesystem has no hard links, renameat2(RENAME_NOREPLACE); never a plain rename."""
    try:
        os.link(temp, dest)
    except FileExistsError:
        raise OutputExists(dest) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        _rename_noreplace(temp, dest)
        return
    os.unlink(temp)


def _refused(dest: PathLike) -> NestosError:
    return NestosError(
        f"cannot create {dest} safely: its filesystem has no hard links and no "
        "renameat2(RENAME_NOREPLACE), so publishing it could overwrite a file of that name",
        hint="write the output to a directory on another filesystem",
    )


def _rename_noreplace(temp: Path, dest: PathLike) -> None:
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, OSError, AttributeError):
        raise _refused(dest) from None
    renameat2.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    renameat2.restype = ctypes.c_int
    src, dst = os.fsencode(temp), os.fsencode(dest)
    if renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise OutputExists(dest)
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        raise _refused(dest)
    raise OSError(err, os.strerror(err), os.fsdecode(dst))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
