"""GPT facts and edits on disks and image files: sector-size detection, blank tables,
partition filters and saved partitions.

Reads and blank writes use pyparted (libparted). Restoring saved partitions uses sfdisk,
because libparted cannot set a partition's unique GUID or raw attribute bits. Imports only
`run` and `errors`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nestos_installer import run
from nestos_installer.errors import ImageFormatError, TargetError, UsageError
from nestos_installer.errors import NestosError as NestosErrorBase

GPT_SIGNATURE = b"EFI PART"


def image_sector_size(head: bytes) -> Optional[int]:
    """Logical sector size an image was formatted for: the offset of its GPT header."""
    if head[512:520] == GPT_SIGNATURE:
        return 512
    if head[4096:4104] == GPT_SIGNATURE:
        return 4096
    return None


def check_sector_size(head: bytes, disk_sector: int) -> None:
    image = image_sector_size(head)
    if image is not None and image != disk_sector:
        raise ImageFormatError(
            f"source has sector size {image} but destination has sector size {disk_sector}",
            hint="use the 4k.raw.xz image for 4096-byte-sector disks"
            if disk_sector == 4096
            else "use the raw.xz image (512-byte sectors) for this disk",
        )


def write_blank(path: str) -> None:
    """Write an empty GPT (primary and backup at the device's end) with libparted."""
    import parted  # pyparted: imported lazily, only where a table is written

    try:
        device = parted.getDevice(path)
        disk = parted.freshDisk(device, "gpt")
        disk.commitToDevice()
    except Exception as e:  # pyparted raises its own exception zoo
        raise TargetError(f"writing a blank partition table to {path}") from e
    finally:
        try:
            device.removeFromCache()
        except Exception:
            pass


# ---------------------------------------------------------------- partition filters


@dataclass(frozen=True)
class IndexRange:
    first: Optional[int]
    last: Optional[int]

    def matches(self, index: int) -> bool:
        return (self.first is None or index >= self.first) and (
            self.last is None or index <= self.last
        )

    def __str__(self) -> str:
        """As the user writes it: `partition 2`, `partitions 2-5`, `partitions 2-`."""
        if self.first is not None and self.first == self.last:
            return f"partition {self.first}"
        return f"partitions {self.first or ''}-{self.last or ''}"


def _parse_index(part: str) -> int:
    if not re.fullmatch(r"[0-9]+", part):
        raise UsageError(f"couldn't parse partition index '{part}'")
    value = int(part)
    if value == 0:
        raise UsageError("partition index cannot be zero")
    return value


def parse_index_range(text: str) -> IndexRange:
    parts = text.split("-")
    if len(parts) == 1:
        i = _parse_index(parts[0])
        return IndexRange(i, i)
    if len(parts) != 2:
        raise UsageError(f"couldn't parse partition index range '{text}'")
    a, b = parts
    if not a and not b:
        raise UsageError(f"both ends of partition index range '{text}' cannot be open")
    first = _parse_index(a) if a else None
    last = _parse_index(b) if b else None
    if first is not None and last is not None and first > last:
        raise UsageError(f"start of partition index range '{text}' cannot be greater than end")
    return IndexRange(first, last)


def _check_glob(pattern: str) -> str:
    if "***" in pattern or pattern.count("[") != pattern.count("]"):
        raise UsageError(f"couldn't parse label glob '{pattern}'")
    return pattern


@dataclass(frozen=True)
class PartitionFilter:
    labels: Tuple[str, ...] = ()
    indexes: Tuple[IndexRange, ...] = ()

    @classmethod
    def parse(cls, labels: Sequence[str], indexes: Sequence[str]) -> PartitionFilter:
        lab = [_check_glob(p) for item in labels for p in item.split(",")]
        idx = [parse_index_range(p) for item in indexes for p in item.split(",")]
        return cls(tuple(lab), tuple(idx))

    def __bool__(self) -> bool:
        return bool(self.labels or self.indexes)

    def matches(self, index: int, name: str) -> bool:
        return any(r.matches(index) for r in self.indexes) or any(
            fnmatch.fnmatchcase(name, g) for g in self.labels
        )

    def __str__(self) -> str:
        """In user terms: `partitions labelled data*, partition 2, partitions 5-`."""
        labels = [f"partitions labelled {', '.join(self.labels)}"] if self.labels else []
        return ", ".join(labels + [str(r) for r in self.indexes]) or "nothing"


# ---------------------------------------------------------------- saved partitions


@dataclass(frozen=True)
class PartitionEntry:
    """One GPT entry as sfdisk reports it (sizes in sectors)."""

    index: int
    start: int
    size: int
    type: str
    uuid: str
    name: str = ""
    attrs: str = ""

    def sfdisk_line(self) -> str:
        fields = [
            f"start={self.start}",
            f"size={self.size}",
            f"type={self.type}",
            f"uuid={self.uuid}",
        ]
        if self.name:
            fields.append('name="' + self.name.replace('"', "") + '"')
        if self.attrs:
            fields.append(f'attrs="{self.attrs}"')
        return ", ".join(fields)


@dataclass(frozen=True)
class PartitionTable:
    sector_size: int
    entries: Tuple[PartitionEntry, ...] = field(default_factory=tuple)
    label: str = "gpt"


def read_table(path: str) -> Optional[PartitionTable]:
    """Read the partition table of a disk or image with `sfdisk --json`; None when blank."""
    run.require_tool("sfdisk", "read the partition table (util-linux/fdisk)")
    proc = run.run(["sfdisk", "--json", path], check=False)
    if proc.returncode != 0:
        return None
    try:
        data: Dict[str, Any] = json.loads(proc.stdout)["partitiontable"]
    except (ValueError, KeyError) as e:
        raise TargetError(f"parsing the partition table of {path}") from e
    entries = []
    for p in data.get("partitions", []):
        node = p["node"]
        m = re.search(r"(\d+)$", node)
        if not m:
            continue
        entries.append(
            PartitionEntry(
                index=int(m.group(1)),
                start=int(p["start"]),
                size=int(p["size"]),
                type=str(p.get("type", "")),
                uuid=str(p.get("uuid", "")),
                name=str(p.get("name", "")),
                attrs=str(p.get("attrs", "")),
            )
        )
    return PartitionTable(
        int(data.get("sectorsize", 512)), tuple(entries), str(data.get("label", ""))
    )


def select_saved(
    table: Optional[PartitionTable], filt: PartitionFilter, disk_sector: int
) -> List[PartitionEntry]:
    """The entries of `table` that `filt` keeps (empty when no filter or no table)."""
    if not filt or table is None:
        return []
    if table.label != "gpt":
        if filt.indexes:
            raise TargetError("saving partitions from an MBR disk is not yet supported")
        return []
    if table.sector_size != disk_sector:
        raise TargetError(
            f"GPT sector size {table.sector_size} doesn't match expected {disk_sector}"
        )
    return [e for e in table.entries if filt.matches(e.index, e.name)]


def renumber(
    image_indexes: Sequence[int], saved: Sequence[PartitionEntry]
) -> List[Tuple[int, PartitionEntry]]:
    """New index for each saved partition: max(next free after the image's, original)."""
    nxt = max(image_indexes, default=0) + 1
    result = []
    for entry in sorted(saved, key=lambda e: e.index):
        new = max(nxt, entry.index)
        result.append((new, entry))
        nxt = new + 1
    return result


def check_collision(saved: Sequence[PartitionEntry], image_end: int, sector: int) -> None:
    """The image may not reach into the first saved partition."""
    for e in sorted(saved, key=lambda e: e.start):
        if e.start * sector < image_end:
            raise TargetError(
                f'collision with partition {e.index} ("{e.name}") at offset {e.start * sector}'
            )


def first_saved_offset(saved: Sequence[PartitionEntry], sector: int) -> Optional[int]:
    return min((e.start * sector for e in saved), default=None)


def _node(path: str, index: int) -> str:
    """The name sfdisk expects for partition `index` in a script line (it takes the number
    from it): /dev/sda3, /dev/loop0p3, disk.img3."""
    return f"{path}{'p' if path[-1].isdigit() else ''}{index}"


_SFDISK = [
    "sfdisk",
    "--no-reread",
    "--no-tell-kernel",
    "-q",
    "--wipe",
    "never",
    "--wipe-partitions",
    "never",
]


def _sfdisk_write(path: str, script: str) -> None:
    run.require_tool("sfdisk", "write partition tables with saved partitions")
    run.run([*_SFDISK, path], input=script.encode())


def write_saved_only(path: str, saved: Sequence[PartitionEntry]) -> None:
    """A new GPT holding only the saved partitions, each at its original index."""
    lines = ["label: gpt"]
    lines += [f"{_node(path, e.index)} : {e.sfdisk_line()}" for e in saved]
    _sfdisk_write(path, "\n".join(lines) + "\n")


def dry_run(saved: Sequence[PartitionEntry], disk_size: int) -> None:
    """Write the saved-only table to a scratch file of the disk's size first: a table that
    cannot be written (duplicate GUIDs, overlaps) is refused before the disk is touched."""
    if not saved:
        return
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="nestos-installer-partitions.") as f:
        f.truncate(disk_size)
        f.flush()
        try:
            write_saved_only(f.name, saved)
        except NestosErrorBase as e:
            raise TargetError(
                "failed dry run restoring saved partitions; input partition table may be invalid"
            ) from e
        guids = [e.uuid.upper() for e in saved]
        if len(set(guids)) != len(guids):
            raise TargetError(
                "failed dry run restoring saved partitions; input partition "
                "table may be invalid: duplicate partition GUIDs"
            )


def merge_saved(path: str, moves: Sequence[Tuple[int, PartitionEntry]]) -> None:
    """Add saved partitions (new index, entry) to the image's GPT now on `path`, keeping
    their GUIDs, names, types and attributes; the table is resized to the whole disk."""
    run.require_tool("sfdisk", "restore saved partitions")
    dump = run.output(["sfdisk", "--dump", path])
    lines = [
        ln for ln in dump.splitlines() if ln.strip() and not ln.startswith(("last-lba:", "device:"))
    ]
    lines += [f"{_node(path, new)} : {e.sfdisk_line()}" for new, e in moves]
    _sfdisk_write(path, "\n".join(lines) + "\n")
