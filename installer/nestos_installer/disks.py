"""Read-only facts about block devices: mounts, swaps, disks and partitions, by-id names, who
holds a disk, and the physical disks under a mount (through dm, md, multipath).

Every reader takes `root` (tests pass a fake /sys, /proc, /dev tree). Imports only the stdlib
and `errors`: the x2nestos zipapp bundles it, so it must run on Python 3.7.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from nestos_installer.errors import TargetBusy, TargetError

ROOT = Path("/")
# The mounts of the running OS whose disks are "the system disks" (default x2nestos target,
# never an install target).
SYSTEM_MOUNTPOINTS = ("/", "/boot", "/boot/efi")
# Preference order of by-id names: world-wide names first, then serial-based ones.
_BY_ID_ORDER = ("wwn-", "nvme-eui.", "nvme-uuid.", "nvme-", "scsi-", "ata-", "virtio-", "usb-")


def read_attr(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


# ---------------------------------------------------------------- mount table and swaps


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    devno: str  # "major:minor"
    target: str
    fstype: str
    source: str


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts(root: Path = ROOT) -> List[Mount]:
    out: List[Mount] = []
    for line in (read_attr(root / "proc/self/mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        rest = right.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        out.append(Mount(fields[2], _unescape(fields[4]), rest[0], _unescape(rest[1])))
    return out


def mount_of(path: str, table: List[Mount]) -> Optional[Mount]:
    """The mount that holds `path` (longest matching target; the last such one wins)."""
    best: Optional[Mount] = None
    norm = os.path.normpath("/" + path.lstrip("/"))
    for m in table:
        t = m.target.rstrip("/") or "/"
        if norm == t or norm.startswith(t if t.endswith("/") else t + "/") or t == "/":
            if best is None or len(t) >= len(best.target.rstrip("/") or "/"):
                best = m
    return best


def swaps(root: Path = ROOT) -> List[str]:
    """The paths of /proc/swaps (block devices or swap files)."""
    lines = (read_attr(root / "proc/swaps") or "").splitlines()[1:]
    return [line.split()[0] for line in lines if line.split()]


# ---------------------------------------------------------------- block devices


@dataclass(frozen=True)
class BlockDevice:
    """A kernel block device: a disk (sys/block/NAME) or one of its partitions."""

    name: str
    devno: str
    disk: Optional[str]  # the disk a partition belongs to; None for a disk
    sysdir: Path

    @property
    def stacked(self) -> bool:
        """Built by device-mapper (LVM, multipath, dm-crypt) or MD RAID over other devices."""
        return self.name.startswith(("dm-", "md"))

    @property
    def whole_disk(self) -> bool:
        return self.disk is None and not self.stacked


def _partition_dirs(sysdir: Path) -> List[Path]:
    try:
        children = sorted(sysdir.iterdir())
    except OSError:
        return []
    parts = [p for p in children if p.name.startswith(sysdir.name) and (p / "partition").exists()]
    return sorted(parts, key=lambda p: int(read_attr(p / "partition") or "0"))


def block_devices(root: Path = ROOT) -> Dict[str, BlockDevice]:
    """Every disk of sys/block and every partition, by kernel name."""
    out: Dict[str, BlockDevice] = {}
    sysblock = root / "sys/block"
    for d in sorted(sysblock.iterdir()) if sysblock.is_dir() else []:
        out[d.name] = BlockDevice(d.name, read_attr(d / "dev") or "", None, d)
        for p in _partition_dirs(d):
            out[p.name] = BlockDevice(p.name, read_attr(p / "dev") or "", d.name, p)
    return out


def _resolve_in(root: Path, path: str) -> str:
    """Follow the symlinks of `path` (a /dev/disk/by-*, /dev/mapper link...) inside root."""
    for _ in range(40):
        link = root / path.lstrip("/")
        if not link.is_symlink():
            return path
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(link)))
    raise TargetError(f"{path}: too many levels of symbolic links")


def kernel_name(spec: str, root: Path = ROOT) -> str:
    """The kernel's name (sda, dm-0, nvme0n1p2) for /dev/X, X, a /dev/disk/by-* or /dev/mapper
    link, or "major:minor"."""
    if re.fullmatch(r"\d+:\d+", spec):
        found = [b.name for b in block_devices(root).values() if b.devno == spec]
        if not found:
            raise TargetError(f"no block device has number {spec}")
        return found[0]
    path = _resolve_in(root, spec if spec.startswith("/") else f"/dev/{spec}")
    try:
        st = os.stat(root / path.lstrip("/"))
    except OSError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        link = root / f"sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        if link.exists():
            return link.resolve().name
    name = os.path.basename(path)
    if not name or not re.match(r"^[\w.:-]+$", name):
        raise TargetError(f"{spec} is not a block device name")
    return name


def canonical_device(path: str, root: Path = ROOT) -> str:
    """Resolve symlinks (/dev/disk/by-id/...) and require a block device."""
    if root == ROOT:
        real = os.path.realpath(path)
    else:
        real = "/" + os.path.relpath(os.path.realpath(root / path.lstrip("/")), root)
    try:
        st = os.stat(root / real.lstrip("/"))
    except FileNotFoundError as e:
        raise TargetError(f"{path} does not exist") from e
    if not stat.S_ISBLK(st.st_mode):
        raise TargetError(f"{path} is not a block device")
    return real


def partitions_of(dev: str, root: Path = ROOT) -> List[str]:
    """The /dev nodes of the partitions the kernel knows for disk `dev` (by number)."""
    sysdir = root / "sys/block" / kernel_name(dev, root)
    return [f"/dev/{p.name}" for p in _partition_dirs(sysdir)]


def _links(sysdir: Path, kind: str) -> List[str]:
    """Names in sysdir/holders (who is built on it) or sysdir/slaves (what it is built on)."""
    d = sysdir / kind
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# ---------------------------------------------------------------- through the stack


def _physical(name: str, index: Dict[str, BlockDevice]) -> Set[str]:
    out: Set[str] = set()
    todo, seen = [name], set()
    while todo:
        node = index.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.disk is not None:  # partition -> its disk (which may itself be md or dm)
            todo.append(node.disk)
        elif node.stacked:  # dm (LVM, multipath, crypt, kpartx) or md -> what it is built on
            todo += _links(node.sysdir, "slaves")
        else:
            out.add(node.name)
    return out


def physical_disks(dev: str, root: Path = ROOT) -> List[str]:
    """The whole physical disks under `dev` (name, /dev path or "major:minor"): a partition
    leads to its disk, a dm or md device to its slaves, down to disks that are neither.

    Multipath: a map over two paths of one LUN yields both path disks (sda, sdb). They are the
    same disk, but which path the installed system should name is not ours to guess: x2nestos
    sees two disks, offers no default and asks for -d.
    """
    return sorted(_physical(kernel_name(dev, root), block_devices(root)))


def _above(names: Iterable[str], index: Dict[str, BlockDevice]) -> List[str]:
    """Every device built on `names`, transitively (LVs on a PV, dm-crypt on an LV...)."""
    out: List[str] = []
    todo = list(names)
    while todo:
        node = index.get(todo.pop(0))
        for h in _links(node.sysdir, "holders") if node else []:
            if h not in out:
                out.append(h)
                todo.append(h)
    return out


def _mount_device(m: Mount, index: Dict[str, BlockDevice], root: Path) -> Optional[str]:
    for b in index.values():
        if b.devno == m.devno:
            return b.name
    if m.source.startswith("/dev/"):  # btrfs reports an anonymous devno: use the source
        try:
            name = kernel_name(m.source, root)
        except TargetError:
            return None
        return name if name in index else None
    return None


def root_disks(root: Path = ROOT, mountpoints: Sequence[str] = SYSTEM_MOUNTPOINTS) -> List[str]:
    """/dev paths of the physical disks holding the running system (/, /boot, /boot/efi),
    through LVM, RAID and multipath."""
    table = mounts(root)
    index = block_devices(root)
    found: Set[str] = set()
    for mp in mountpoints:
        hits = [m for m in table if m.target == mp]
        name = _mount_device(hits[-1], index, root) if hits else None
        if name is not None:
            found |= _physical(name, index)
    return [f"/dev/{n}" for n in sorted(found)]


def require_not_root_disk(dev: str, root: Path = ROOT) -> None:
    if dev in root_disks(root):
        raise TargetBusy(f"{dev} holds the running system's root filesystem", [f"{dev} holds /"])


# ---------------------------------------------------------------- who holds a disk


def _swap_names(root: Path) -> Set[str]:
    out = set()
    for path in swaps(root):
        if path.startswith("/dev/"):
            try:
                out.add(kernel_name(path, root))
            except TargetError:
                continue
    return out


@dataclass(frozen=True)
class Holders:
    """What can hold a block device, read once: the device index, mounts by devno, swaps."""

    index: Dict[str, BlockDevice]
    mounted: Dict[str, List[str]]
    swapping: Set[str]

    @classmethod
    def read(cls, root: Path) -> Holders:
        mounted: Dict[str, List[str]] = {}
        for m in mounts(root):
            mounted.setdefault(m.devno, []).append(m.target)
        return cls(block_devices(root), mounted, _swap_names(root))

    def report(self, name: str) -> List[str]:
        nodes = [n for n in self.index.values() if n.name == name or n.disk == name]
        lines: List[str] = []
        for node in sorted(nodes, key=lambda n: n.disk is not None):  # disk, then partitions
            path = f"/dev/{node.name}"
            lines += [f"{path} mounted on {mp}" for mp in self.mounted.get(node.devno, [])]
            if node.name in self.swapping:
                lines.append(f"{path} is swap device")
            lines += [f"{path} in use by /dev/{h}" for h in _links(node.sysdir, "holders")]
        return lines


def busy_report(dev: str, root: Path = ROOT) -> List[str]:
    """Lines naming who holds `dev` or its partitions: mounts, swap, holders (dm, md...)."""
    return Holders.read(root).report(kernel_name(dev, root))


# ---------------------------------------------------------------- identity


def _udev_by_id(name: str, root: Path) -> Optional[str]:
    byid = root / "dev/disk/by-id"
    if not byid.is_dir():
        return None
    found = []
    for link in byid.iterdir():
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if os.path.basename(target) == name and "-part" not in link.name:
            found.append(link.name)
    for prefix in _BY_ID_ORDER:
        for n in sorted(found):
            if n.startswith(prefix):
                return n
    return sorted(found)[0] if found else None


def _clean(text: str) -> str:
    return re.sub(r"[^\w.+:-]", "_", text.strip())


def serial_of(sysdir: Path) -> Optional[str]:
    """The serial the live target check re-reads (virtio `serial`, NVMe/MMC `device/serial`)."""
    return read_attr(sysdir / "serial") or read_attr(sysdir / "device/serial")


def _sysfs_by_id(name: str, sysdir: Path) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """Derive the by-id name udev would create, from sysfs alone: (by_id, serial, wwid)."""
    serial = serial_of(sysdir)
    wwid = read_attr(sysdir / "wwid") or read_attr(sysdir / "device/wwid")
    model = read_attr(sysdir / "device/model")
    if wwid:
        if wwid.startswith("naa."):
            return f"wwn-0x{wwid[4:].lower()}", serial, wwid
        if wwid.startswith(("eui.", "uuid.")) and name.startswith("nvme"):
            return f"nvme-{wwid}", serial, wwid
    if name.startswith("vd") and serial:
        return f"virtio-{_clean(serial)[:20]}", serial, wwid
    if name.startswith("nvme") and serial and model:
        return f"nvme-{_clean(model)}_{_clean(serial)}", serial, wwid
    return None, serial, wwid


@dataclass(frozen=True)
class Partition:
    name: str
    devno: str
    number: int
    label: Optional[str]
    size: int


@dataclass(frozen=True)
class TargetDisk:
    """A whole disk and what lives on it, as seen from the running host."""

    name: str
    devno: str
    size: int
    by_id: Optional[str]
    by_id_source: str  # "udev" (/dev/disk/by-id) or "sysfs" (derived like udev would name it)
    serial: Optional[str]
    wwid: Optional[str]
    model: Optional[str]
    removable: bool
    read_only: bool
    partitions: Tuple[Partition, ...] = ()
    holders: Tuple[str, ...] = ()
    mounted: Tuple[Tuple[str, str, str], ...] = ()  # (device, mount point, fstype)
    swap: Tuple[str, ...] = ()

    @property
    def kernel_path(self) -> str:
        return f"/dev/{self.name}"

    @property
    def stable_path(self) -> Optional[str]:
        return f"/dev/disk/by-id/{self.by_id}" if self.by_id else None

    def to_json(self) -> Dict[str, object]:
        return {
            "name": self.name,
            "kernel-path": self.kernel_path,
            "stable-path": self.stable_path,
            "identity-source": self.by_id_source,
            "serial": self.serial,
            "wwid": self.wwid,
            "model": self.model,
            "size": self.size,
            "removable": self.removable,
            "read-only": self.read_only,
            "partitions": [
                {"name": p.name, "number": p.number, "label": p.label, "size": p.size}
                for p in self.partitions
            ],
            "holders": list(self.holders),
            "mounted": [{"device": d, "mountpoint": t, "fstype": f} for d, t, f in self.mounted],
            "swap": list(self.swap),
        }


def _uevent(path: Path) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in (read_attr(path / "uevent") or "").splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


_DM_KINDS = (
    ("LVM-", "an LVM logical volume"),
    ("mpath-", "a multipath device"),
    ("CRYPT-", "an encrypted (dm-crypt) device"),
)


def _stacked_what(node: BlockDevice) -> str:
    if node.name.startswith("md"):
        return "a software RAID (md) device"
    uuid = read_attr(node.sysdir / "dm/uuid") or ""
    found = [what for prefix, what in _DM_KINDS if uuid.startswith(prefix)]
    return found[0] if found else "a device-mapper device (LVM, multipath or dm-crypt)"


def whole_disk(spec: str, root: Path = ROOT) -> str:
    """The kernel name of the whole physical disk `spec` names; a partition, an LVM volume, a
    RAID or multipath device is refused with the disks to name instead."""
    index = block_devices(root)
    name = kernel_name(spec, root)
    node = index.get(name)
    if node is None:
        raise TargetError(f"{spec}: no such block device")
    if node.disk is not None:
        raise TargetError(
            f"{spec} is a partition of /dev/{node.disk}, not a whole disk",
            hint=f"name the whole disk, e.g. /dev/{node.disk}",
        )
    if node.stacked:
        under = ", ".join(f"/dev/{n}" for n in sorted(_physical(name, index)))
        raise TargetError(
            f"{spec} is {_stacked_what(node)}, not a whole disk",
            hint=f"name a physical disk under it ({under})" if under else "name a physical disk",
        )
    return name


def _partitions(sysdir: Path) -> List[Partition]:
    parts = []
    for pdir in _partition_dirs(sysdir):
        parts.append(
            Partition(
                name=pdir.name,
                devno=read_attr(pdir / "dev") or "",
                number=int(read_attr(pdir / "partition") or "0"),
                label=_uevent(pdir).get("PARTNAME") or None,
                size=int(read_attr(pdir / "size") or "0") * 512,
            )
        )
    return parts


def resolve(spec: str, root: Path = ROOT) -> TargetDisk:
    """Resolve `spec` to a whole disk with identity, size, partitions and users."""
    name = whole_disk(spec, root)
    index = block_devices(root)
    sysdir = index[name].sysdir
    parts = _partitions(sysdir)
    holders = _links(sysdir, "holders")
    for p in parts:
        holders += _links(sysdir / p.name, "holders")
    # Mounts on the disk, its partitions and everything stacked on them (LVM root, RAID, ...).
    users = [name] + [p.name for p in parts] + _above([name] + [p.name for p in parts], index)
    devnos = {index[n].devno: n for n in users if n in index}
    mounted = [
        (f"/dev/{devnos[m.devno]}", m.target, m.fstype) for m in mounts(root) if m.devno in devnos
    ]
    by_id = _udev_by_id(name, root)
    derived, serial, wwid = _sysfs_by_id(name, sysdir)
    return TargetDisk(
        name=name,
        devno=index[name].devno,
        size=int(read_attr(sysdir / "size") or "0") * 512,
        by_id=by_id or derived,
        by_id_source="udev" if by_id else "sysfs",
        serial=serial,
        wwid=wwid,
        model=read_attr(sysdir / "device/model"),
        removable=read_attr(sysdir / "removable") == "1",
        read_only=read_attr(sysdir / "ro") == "1",
        partitions=tuple(parts),
        holders=tuple(holders),
        mounted=tuple(mounted),
        swap=tuple(f"/dev/{n}" for n in sorted(_swap_names(root) & set(users))),
    )
