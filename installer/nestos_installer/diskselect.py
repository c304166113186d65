"""Choosing the destination disk by `auto:` filters (`min-size=`, `type=`, `serial=` ...):
exactly one disk that holds nothing of the running system and nothing in use, or a refusal.

Reads sysfs through `disks` (stdlib + errors only, like disks).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from nestos_installer.disks import ROOT, Holders, read_attr, root_disks, serial_of
from nestos_installer.errors import TargetError, UsageError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
FILTER_KEYS = ("min-size", "max-size", "type", "serial", "model", "wwn", "name")


@dataclass(frozen=True)
class Disk:
    """A candidate of `auto:` with what lsblk would say of it (read from sysfs)."""

    path: str
    size: int
    transport: str
    serial: str
    model: str
    wwn: str
    removable: bool
    readonly: bool
    in_use: bool

    @property
    def kind(self) -> str:
        name = os.path.basename(self.path)
        if name.startswith("nvme"):
            return "nvme"
        if name.startswith("vd"):
            return "virtio"
        if name.startswith("loop"):
            return "loop"
        return self.transport or "disk"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip().upper().replace("IB", "iB"))
    if not m:
        raise UsageError(f"invalid size '{text}' in auto: filter (e.g. 20G)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _scsi_host_transport(host: str, sysdir: Path, path: str, root: Path) -> str:
    """lsblk's TRAN for a SCSI disk, from its host's classes and driver."""
    cls = root / "sys/class"
    if (cls / "spi_host" / host).exists():
        return "spi"
    if (cls / "fc_host" / host).exists():
        return (
            "fcoe"
            if " over " in (read_attr(cls / "fc_host" / host / "symbolic_name") or "")
            else "fc"
        )
    if (cls / "sas_host" / host).exists() or (sysdir / "device/sas_device").exists():
        return "sas"
    if (sysdir / "device/ieee1394_id").exists():
        return "sbp"
    if (cls / "iscsi_host" / host).exists():
        return "iscsi"
    if "/usb" in path:
        return "usb"
    driver = read_attr(cls / "scsi_host" / host / "proc_name") or ""
    if driver.startswith(("ahci", "sata")):
        return "sata"
    return "ata" if "ata" in driver else ""


def _transport(name: str, sysdir: Path, root: Path) -> str:
    path = str((sysdir / "device").resolve()) if (sysdir / "device").exists() else ""
    host = re.search(r"/(host\d+)/", path)
    if host:
        return _scsi_host_transport(host.group(1), sysdir, path, root)
    for prefix, tran in (("nvme", "nvme"), ("vd", "virtio"), ("mmcblk", "mmc")):
        if name.startswith(prefix):
            return tran
    return ""


def _lsblk_serial_wwn(sysdir: Path) -> Tuple[str, str]:
    """SERIAL and WWN as lsblk shows them: the SCSI unit serial (VPD page 0x80) when sysfs has
    no serial attribute; a NAA wwid as 0x..., an NVMe one (eui., uuid.) as it is."""
    serial = serial_of(sysdir)
    if not serial:
        try:
            page = (sysdir / "device/vpd_pg80").read_bytes()
        except OSError:
            page = b""
        serial = page[4 : 4 + page[3]].decode(errors="replace") if len(page) > 4 else ""
    wwid = read_attr(sysdir / "wwid") or read_attr(sysdir / "device/wwid") or ""
    wwn = "0x" + wwid[4:].lower() if wwid.startswith("naa.") else ""
    if wwid.startswith(("eui.", "uuid.", "nvme.")):
        wwn = wwid
    return serial.strip(), wwn


def list_disks(root: Path = ROOT) -> List[Disk]:
    """The disks and loop devices lsblk would list as TYPE disk/loop, with a size."""
    disks = []
    users = Holders.read(root)
    for node in users.index.values():
        scsi_type = read_attr(node.sysdir / "device/type")
        if not node.whole_disk or scsi_type not in (None, "0"):  # 5 = CD-ROM, 1 = tape...
            continue
        size = int(read_attr(node.sysdir / "size") or "0") * 512
        if not size:
            continue
        serial, wwn = _lsblk_serial_wwn(node.sysdir)
        disks.append(
            Disk(
                path=f"/dev/{node.name}",
                size=size,
                transport=_transport(node.name, node.sysdir, root),
                serial=serial,
                model=read_attr(node.sysdir / "device/model") or "",
                wwn=wwn,
                removable=read_attr(node.sysdir / "removable") == "1",
                readonly=read_attr(node.sysdir / "ro") == "1",
                in_use=bool(users.report(node.name)),
            )
        )
    return disks


def _matches(disk: Disk, filters: Dict[str, str]) -> bool:
    for key, value in filters.items():
        if key == "min-size" and disk.size < parse_size(value):
            return False
        if key == "max-size" and disk.size > parse_size(value):
            return False
        if key == "type" and disk.kind != value and disk.transport != value:
            return False
        if key == "serial" and disk.serial != value:
            return False
        if key == "wwn" and disk.wwn != value:
            return False
        if key == "model" and value.lower() not in disk.model.lower():
            return False
        if key == "name" and os.path.basename(disk.path) != value:
            return False
    return True


def parse_auto(spec: str) -> Dict[str, str]:
    filters: Dict[str, str] = {}
    body = spec[len("auto:") :]
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_KEYS:
            raise UsageError(
                f"invalid auto: filter '{item}'", hint=f"known filters: {', '.join(FILTER_KEYS)}"
            )
        filters[key] = value
    return filters


def choose_disk(spec: str, disks: Optional[List[Disk]] = None, root: Path = ROOT) -> Disk:
    """Exactly one disk matching the filters, never one holding / or anything in use."""
    filters = parse_auto(spec)
    disks = list_disks(root) if disks is None else disks
    roots = set(root_disks(root))
    usable = [d for d in disks if d.path not in roots and not d.in_use and not d.readonly]
    if "type" not in filters:
        usable = [d for d in usable if d.kind != "loop"]  # loop devices only when asked for
    found = [d for d in usable if _matches(d, filters)]
    if not found:
        raise TargetError(f"no disk matches '{spec}' (disks in use or holding / are never chosen)")
    if len(found) > 1:
        names = ", ".join(d.path for d in found)
        raise TargetError(
            f"'{spec}' matches {len(found)} disks ({names}); refusing to guess",
            hint="add a filter such as serial=... or min-size=...",
        )
    return found[0]


def resolve_dest(spec: str, say: Callable[[str], None], root: Path = ROOT) -> str:
    """The destination disk: `spec` itself, or the one disk an `auto:` spec selects."""
    if spec.startswith("auto:"):
        disk = choose_disk(spec, root=root)
        say(
            f"Selected disk {disk.path} ({disk.size} bytes, {disk.kind}, "
            f"serial {disk.serial or 'n/a'}) for '{spec}'"
        )
        return disk.path
    return spec
