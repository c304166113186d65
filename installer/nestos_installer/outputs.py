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
    """Give `temp` the name `dest` unless that name exists: link(2) then unlink; where the
    filesystem has no hard links, renameat2(RENAME_NOREPLACE); where it has neither (FUSE
    exFAT/NTFS on a USB stick), claim the name with O_EXCL and rename over our own claim.
    Never a plain rename over a name we did not create."""
    try:
        os.link(temp, dest)
    except FileExistsError:
        raise OutputExists(dest) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        if not _rename_noreplace(temp, dest):
            _rename_over_claim(temp, dest)
        return
    os.unlink(temp)


def _rename_noreplace(temp: Path, dest: PathLike) -> bool:
    """renameat2(RENAME_NOREPLACE); False where the filesystem or libc does not have it."""
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, OSError, AttributeError):
        return False
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
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise OutputExists(dest)
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fsdecode(dst))


def _rename_over_claim(temp: Path, dest: PathLike) -> None:
    """The name is ours once O_CREAT|O_EXCL made it; rename(2) then replaces only that empty
    file of ours, atomically, so no other file of that name can be overwritten."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OutputExists(dest) from None
    os.close(fd)
    try:
        os.rename(temp, dest)
    except BaseException:
        _remove(Path(os.fsdecode(dest)))
        raise


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
