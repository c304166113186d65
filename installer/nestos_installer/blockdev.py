"""The privileged surface of the installer: exclusive opens, writes and zeroing, partition
nodes, private mounts.

The only installer module that uses fcntl/ioctls or mounts; read-only disk facts (who holds a
busy disk, partitions) come from `disks`. Must not import gpt (pyparted): callers compose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from nestos_installer import disks, run
from nestos_installer.errors import TargetBusy, TargetError

log = logging.getLogger(__name__)

BLKRRPART = 0x125F
BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272
BLKFLSBUF = 0x1261
BLKZEROOUT = 0x127F
MIB = 1 << 20

T = TypeVar("T")


@dataclass
class Target:
    """An exclusively opened destination disk."""

    path: str  # canonical /dev path
    given: str  # what the user named (e.g. a /dev/disk/by-id link)
    fd: int
    size: int
    sector_size: int
    direct_fd: Optional[int] = None  # O_DIRECT writer for aligned bulk data, when supported
    _zeroout_ok: bool = True

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def fsync(self) -> None:
        os.fsync(self.fd)

    def zero_range(self, offset: int, length: int) -> bool:
        """Make [offset, offset+length) read back as zeros without sending the zeros
        (BLKZEROOUT: the disk's Write Zeroes command, or hole punching under a loop or virtual
        disk; the kernel falls back to writing zero pages itself). Both must be multiples of
        512. False when the device refuses, and the caller writes the zeros."""
        if not self._zeroout_ok or offset % 512 or length % 512:
            return False
        try:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", offset, length))
            return True
        except OSError as e:
            log.debug("BLKZEROOUT refused (%s); writing zeros instead", e)
            self._zeroout_ok = False
            return False

    def release_exclusive(self) -> None:
        """Keep the disk open but drop O_EXCL, so that the kernel lets us mount one of its
        partitions (a mount claims the partition, which an exclusive holder of the whole
        disk blocks)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_target(path: str) -> Target:
    """Open the destination disk read-write and exclusively, or say who holds it."""
    dev = disks.canonical_device(path)
    if (Path("/sys/class/block") / disks.kernel_name(dev) / "partition").exists():
        raise TargetError(
            f"{path} is a partition, not a whole disk",
            hint="give the disk itself, e.g. /dev/sda rather than /dev/sda1",
        )
    try:
        fd = os.open(dev, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise TargetError(f"opening {dev}") from e
        holders = disks.busy_report(dev)
        detail = "; ".join(holders) if holders else "held by another program"
        raise TargetBusy(
            f"found busy partitions on {dev}: {detail}",
            holders,
            hint="unmount those filesystems / stop what holds them first",
        ) from e
    try:
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        size = struct.unpack("Q", buf)[0]
        sector = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    except OSError as e:
        os.close(fd)
        raise TargetError(f"querying size of {dev}") from e
    try:
        # Bulk image data bypasses the page cache (like `dd oflag=direct`): less CPU and no
        # gigabytes of dirty pages to flush at the end.
        direct: Optional[int] = os.open(dev, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        direct = None
    return Target(path=dev, given=path, fd=fd, size=size, sector_size=sector, direct_fd=direct)


def reread_partitions(
    target: Target, *, expect_partitions: bool = True, timeout: float = 10.0
) -> List[str]:
    """Make the kernel see the new partition table and wait for the /dev nodes.

    BLKRRPART first; when the kernel finds no partitions (no GPT parser, or a loop device
    without partscan) fall back to BLKPG through `partx`, which parses the table in user space.
    Never depends on udev: devtmpfs creates the nodes.
    """
    try:
        fcntl.ioctl(target.fd, BLKRRPART)
    except OSError:
        pass  # EINVAL on loop devices without partscan; partx below covers it
    parts = disks.partitions_of(target.path)
    if not parts and expect_partitions:
        run.require_tool("partx", "add partition nodes when the kernel does not parse GPT")
        # -u updates known ones; -a adds the rest. Both are idempotent enough to run in turn.
        run.run(["partx", "-u", target.path], check=False)
        run.run(["partx", "-a", target.path], check=False)
        parts = disks.partitions_of(target.path)
    deadline = time.monotonic() + timeout
    while any(not os.path.exists(p) for p in parts):
        if time.monotonic() > deadline:
            missing = [p for p in parts if not os.path.exists(p)]
            raise TargetError(f"partition nodes did not appear: {', '.join(missing)}")
        time.sleep(0.05)
    return parts


def drop_partitions(target: Target) -> None:
    """Remove the kernel's partition nodes of the target (after a wipe)."""
    try:
        fcntl.ioctl(target.fd, BLKRRPART)
    except OSError:
        pass
    if disks.partitions_of(target.path):
        run.run(["partx", "-d", target.path], check=False)


def probe(dev: str) -> Dict[str, str]:
    """Filesystem facts of one device from blkid's low-level probe (no cache, no udev)."""
    proc = run.run(
        ["blkid", "-p", "-o", "export", dev],
        check=False,
        reason="find the boot filesystem by its label",
    )
    facts: Dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value
    return facts


def find_by_label(partitions: List[str], label: str, disk: str) -> tuple[str, str]:
    """The single partition carrying filesystem `label`, with its filesystem type."""
    found = [(p, probe(p)) for p in partitions]
    matches = [(p, f.get("TYPE", "")) for p, f in found if f.get("LABEL") == label]
    if not matches:
        raise TargetError(f"couldn't find boot device for {disk}")
    if len(matches) > 1:
        raise TargetError(f'found multiple devices on {disk} with label "{label}"')
    dev, fstype = matches[0]
    if not fstype:
        raise TargetError(f"couldn't determine filesystem type of {dev}")
    return dev, fstype


_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _enter_private_namespace() -> None:
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"making / private: {os.strerror(err)}")


def with_mounted(dev: str, fstype: str, fn: Callable[[Path], T]) -> T:
    """Mount `dev` in a private mount namespace, call fn(mountpoint), unmount (retried).

    The namespace belongs to a dedicated thread (unshare affects only the calling task), so
    the mount is invisible to the rest of the system and to the rest of this process.
    """
    box: Dict[str, object] = {}

    def body() -> None:
        try:
            _enter_private_namespace()
            mnt = tempfile.mkdtemp(prefix="nestos-installer-")
            try:
                run.run(["mount", "-t", fstype, dev, mnt], reason="mount the boot partition")
                try:
                    box["result"] = fn(Path(mnt))
                finally:
                    for _attempt in range(20):
                        if run.run(["umount", mnt], check=False).returncode == 0:
                            break
                        time.sleep(0.1)
                    else:
                        raise TargetError(f"unmounting {dev} from {mnt} failed")
            finally:
                os.rmdir(mnt)
        except BaseException as e:  # handed to the calling thread
            box["error"] = e

    t = threading.Thread(target=body, name="nestos-boot-mount")
    t.start()
    t.join()
    if "error" in box:
        err = box["error"]
        assert isinstance(err, BaseException)
        raise err
    return box["result"]  # type: ignore[return-value]


def zero_head(target: Target) -> None:
    """Zero the whole first MiB (boot code, protective MBR, primary GPT) and settle."""
    _zero_and_settle(target, [(0, min(MIB, target.size))])


def clear_for_write(target: Target) -> None:
    """Before an image is streamed: no partition table and nothing bootable left, fast.

    Zeroes the first MiB (boot code, protective MBR, primary GPT) and the backup GPT area at
    the disk's end (header + 16 KiB of entries: never part of a partition, so saved
    partitions are untouched), so neither firmware nor a repair tool can find the old table.
    No libparted here: its commit costs ~0.15 s of fsyncs and probes on every install.
    """
    sector = target.sector_size
    backup = sector + max(16384, sector)  # GPT header sector + partition entry array
    ranges = [(0, min(MIB, target.size))]
    if target.size > MIB + backup:
        ranges.append((target.size - backup, backup))
    _zero_and_settle(target, ranges)


def _zero_and_settle(target: Target, ranges: List[Tuple[int, int]]) -> None:
    """Zero each (offset, length), fsync, and drop the kernel's cached copy of the disk."""
    for offset, length in ranges:
        target.pwrite(b"\0" * length, offset)
    target.fsync()
    try:
        fcntl.ioctl(target.fd, BLKFLSBUF)
    except OSError:
        pass
