"""The target disk: resolve what the user named to one whole disk with a stable by-id identity.

Reads /dev/disk/by-id when udev made it and sysfs (serial, wwid) otherwise; stdlib only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nestos_installer.errors import TargetError
from x2nestos.hostfacts import ROOT, Mount, mounts, swaps

# Mount points that belong to the OS being replaced; anything else mounted is user data.
SYSTEM_MOUNTS = frozenset(
    {"/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "/tmp", "/var/tmp", "/var/log", "/opt"}
)
# Preference order of by-id names: world-wide names first, then serial-based ones.
_BY_ID_ORDER = ("wwn-", "nvme-eui.", "nvme-uuid.", "nvme-", "scsi-", "ata-", "virtio-", "usb-")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


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

    def data_mounts(self, saved_labels: Tuple[str, ...] = ()) -> List[Tuple[str, str, str]]:
        """Mounted filesystems on the disk that are not the old OS and not saved partitions."""
        saved = {p.name for p in self.partitions if p.label and p.label in saved_labels}
        return [
            m
            for m in self.mounted
            if m[1] not in SYSTEM_MOUNTS and m[0].rsplit("/", 1)[-1] not in saved
        ]

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
    for line in (_read(path / "uevent") or "").splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def _whole_disk_name(spec: str, root: Path) -> str:
    """Map /dev/X, X, or a /dev/disk/by-* link (resolved inside root) to a sysfs block name."""
    path = spec if spec.startswith("/") else f"/dev/{spec}"
    link = root / path.lstrip("/")
    if link.is_symlink():
        target = os.readlink(link)
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    name = os.path.basename(path)
    if not name or not re.match(r"^[\w.:-]+$", name):
        raise TargetError(f"{spec} is not a block device name")
    sysblock = root / "sys/block"
    if (sysblock / name).is_dir():
        return name
    for disk in sorted(sysblock.glob("*")):
        if (disk / name / "partition").exists():
            raise TargetError(
                f"{spec} is a partition of /dev/{disk.name}, not a whole disk",
                hint=f"name the whole disk, e.g. /dev/{disk.name}",
            )
    raise TargetError(f"{spec}: no such block device")


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


def _sysfs_by_id(name: str, sysdir: Path) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """Derive the by-id name udev would create, from sysfs alone: (by_id, serial, wwid)."""
    dev = sysdir / "device"
    serial = _read(sysdir / "serial") or _read(dev / "serial")
    wwid = _read(sysdir / "wwid") or _read(dev / "wwid")
    model = _read(dev / "model")
    if wwid:
        wwid = wwid.strip()
        if wwid.startswith("naa."):
            return f"wwn-0x{wwid[4:].lower()}", serial, wwid
        if wwid.startswith(("eui.", "uuid.")) and name.startswith("nvme"):
            return f"nvme-{wwid}", serial, wwid
    if name.startswith("vd") and serial:
        return f"virtio-{_clean(serial)[:20]}", serial, wwid
    if name.startswith("nvme") and serial and model:
        return f"nvme-{_clean(model)}_{_clean(serial)}", serial, wwid
    return None, serial, wwid


def resolve(spec: str, root: Path = ROOT) -> TargetDisk:
    """Resolve `spec` to a whole disk with identity, size, partitions and users."""
    name = _whole_disk_name(spec, root)
    sysdir = root / "sys/block" / name
    devno = _read(sysdir / "dev") or ""
    size = int(_read(sysdir / "size") or "0") * 512
    by_id = _udev_by_id(name, root)
    derived, serial, wwid = _sysfs_by_id(name, sysdir)
    source = "udev" if by_id else "sysfs"
    by_id = by_id or derived
    parts: List[Partition] = []
    for pdir in sorted(sysdir.glob(f"{name}*")):
        if not (pdir / "partition").exists():
            continue
        ue = _uevent(pdir)
        parts.append(
            Partition(
                name=pdir.name,
                devno=_read(pdir / "dev") or "",
                number=int(_read(pdir / "partition") or "0"),
                label=ue.get("PARTNAME") or None,
                size=int(_read(pdir / "size") or "0") * 512,
            )
        )
    holders = [h.name for h in sorted((sysdir / "holders").glob("*"))]
    for p in parts:
        holders += [h.name for h in sorted((sysdir / p.name / "holders").glob("*"))]
    devnos = {devno: name, **{p.devno: p.name for p in parts}}
    for h in holders:  # device-mapper / md devices built on the disk (LVM root, RAID, ...)
        devnos[_read(root / "sys/block" / h / "dev") or f"holder:{h}"] = h
    mounted = _mounted_on(devnos, mounts(root))
    names = {f"/dev/{n}" for n in devnos.values()}
    return TargetDisk(
        name=name,
        devno=devno,
        size=size,
        by_id=by_id,
        by_id_source=source,
        serial=serial,
        wwid=wwid,
        model=_read(sysdir / "device/model"),
        removable=_read(sysdir / "removable") == "1",
        read_only=_read(sysdir / "ro") == "1",
        partitions=tuple(parts),
        holders=tuple(holders),
        mounted=tuple(mounted),
        swap=tuple(s for s in swaps(root) if s in names),
    )


def _mounted_on(devnos: Dict[str, str], table: List[Mount]) -> List[Tuple[str, str, str]]:
    out = []
    for m in table:
        if m.devno in devnos and devnos[m.devno]:
            out.append((f"/dev/{devnos[m.devno]}", m.target, m.fstype))
    return out


def root_disk(root: Path = ROOT) -> Optional[str]:
    """The whole disk that holds the mounted `/`, used as the default target."""
    table = mounts(root)
    rootmount = [m for m in table if m.target == "/"]
    if not rootmount:
        return None
    devno = rootmount[-1].devno
    for disk in sorted((root / "sys/block").glob("*")):
        if _read(disk / "dev") == devno:
            return disk.name
        for p in disk.glob(f"{disk.name}*"):
            if (p / "partition").exists() and _read(p / "dev") == devno:
                return disk.name
    return None
