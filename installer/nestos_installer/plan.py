"""Choosing the destination disk (`auto:` filters, stable by-id names) and describing an
install plan without writing anything.

Read-only: queries lsblk/sysfs through `run` and `blockdev`'s read helpers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from nestos_installer import blockdev, run
from nestos_installer.errors import TargetError, UsageError
from nestos_stream import signature_url

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
FILTER_KEYS = ("min-size", "max-size", "type", "serial", "model", "wwn", "name")


@dataclass(frozen=True)
class Disk:
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


def list_disks() -> List[Disk]:
    out = run.output(
        [
            "lsblk",
            "--json",
            "--bytes",
            "--nodeps",
            "--paths",
            "--output",
            "NAME,SIZE,TYPE,TRAN,SERIAL,MODEL,WWN,RM,RO",
        ],
        reason="list disks for auto: selection",
    )
    disks = []
    for d in json.loads(out).get("blockdevices", []):
        if d.get("type") not in ("disk", "loop") or not int(d.get("size") or 0):
            continue
        path = d["name"]
        disks.append(
            Disk(
                path=path,
                size=int(d["size"]),
                transport=d.get("tran") or "",
                serial=(d.get("serial") or "").strip(),
                model=(d.get("model") or "").strip(),
                wwn=d.get("wwn") or "",
                removable=bool(d.get("rm")),
                readonly=bool(d.get("ro")),
                in_use=bool(blockdev.busy_report(path)),
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


def choose_disk(spec: str, disks: Optional[List[Disk]] = None) -> Disk:
    """Exactly one disk matching the filters, never one holding / or anything in use."""
    filters = parse_auto(spec)
    disks = list_disks() if disks is None else disks
    roots = set(blockdev.root_disks())
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


def resolve_dest(spec: str, say: Callable[[str], None]) -> str:
    if spec.startswith("auto:"):
        disk = choose_disk(spec)
        say(
            f"Selected disk {disk.path} ({disk.size} bytes, {disk.kind}, "
            f"serial {disk.serial or 'n/a'}) for '{spec}'"
        )
        return disk.path
    return spec


def describe(cfg: object) -> str:
    """A human-readable plan of an InstallConfig (no writes, no fetches)."""
    from nestos_installer.install import InstallConfig

    assert isinstance(cfg, InstallConfig)
    dev = cfg.dest_device
    lines = ["Install plan (nothing will be written):"]
    try:
        real = blockdev.canonical_device(dev)
        size = Path(f"/sys/class/block/{os.path.basename(real)}/size")
        sectors = int(size.read_text()) if size.exists() else 0
        lines.append(f"  target:      {dev} -> {real} ({sectors * 512} bytes)")
        busy = blockdev.busy_report(real)
        if busy:
            lines.append(f"  WARNING:     target is busy: {'; '.join(busy)}")
    except TargetError as e:
        lines.append(f"  target:      {dev} ({e})")
    if cfg.image_file:
        src = f"file {cfg.image_file} (signature {cfg.image_file}.sig)"
    elif cfg.image_url:
        src = f"URL {cfg.image_url} (signature {signature_url(cfg.image_url)})"
    else:
        src = f"stream {cfg.stream or '2403-LTS'} {cfg.architecture} metal" + (
            f" from {cfg.stream_base_url}" if cfg.stream_base_url else ""
        )
    lines.append(f"  source:      {src}")
    lines.append(f"  signature:   {'optional (--insecure)' if cfg.insecure else 'required'}")
    ign = cfg.ignition_file or cfg.ignition_url
    lines.append(f"  ignition:    {ign or 'none'}")
    if cfg.platform:
        lines.append(f"  platform:    {cfg.platform}")
    for c in cfg.console:
        lines.append(f"  console:     {c}")
    for k in cfg.append_karg:
        lines.append(f"  append karg: {k}")
    for k in cfg.delete_karg:
        lines.append(f"  delete karg: {k}")
    if cfg.firstboot_args:
        lines.append(f"  first boot:  {cfg.firstboot_args}")
    if cfg.copy_network:
        lines.append(f"  network:     copy keyfiles from {cfg.network_dir}")
    if cfg.save:
        lines.append(
            f"  save:        labels {list(cfg.save.labels)} indexes "
            f"{[(r.first, r.last) for r in cfg.save.indexes]}"
        )
        try:
            from nestos_installer import gpt

            table = gpt.read_table(blockdev.canonical_device(dev))
            for ent in gpt.select_saved(table, cfg.save, table.sector_size if table else 512):
                lines.append(
                    f'    keeps partition {ent.index} ("{ent.name}") at sector {ent.start}'
                )
        except Exception as err:  # the plan reports, never fails on a read problem
            lines.append(f"    (could not read partition table: {err})")
    return "\n".join(lines)
