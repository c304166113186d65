"""A GPT writer for image files of any logical sector size (512 or 4096).

sfdisk/sgdisk take the sector size from the device, so they cannot lay out a 4Kn table on a
plain file; this writes protective MBR + primary and backup GPT (UEFI spec 5.3) directly.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ENTRIES = 128
ENTRY_SIZE = 128


@dataclass(frozen=True)
class Entry:
    """One partition: 1-based index, type GUID, first and last LBA (inclusive), name."""

    index: int
    type_guid: str
    first_lba: int
    last_lba: int
    name: str
    unique_guid: str


def _header(
    sector: int,
    lba: int,
    backup: int,
    entries_lba: int,
    last_lba: int,
    disk_guid: str,
    entries_crc: int,
) -> bytes:
    first_usable = 2 + ENTRIES * ENTRY_SIZE // sector
    last_usable = last_lba - ENTRIES * ENTRY_SIZE // sector - 1
    fields = [
        b"EFI PART",
        0x00010000,
        92,
        0,
        0,
        lba,
        backup,
        first_usable,
        last_usable,
        uuid.UUID(disk_guid).bytes_le,
        entries_lba,
        ENTRIES,
        ENTRY_SIZE,
        entries_crc,
    ]
    hdr = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", *fields))
    struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr)))
    return bytes(hdr) + b"\0" * (sector - len(hdr))


def write_gpt(path: Path, sector: int, disk_guid: str, parts: Sequence[Entry]) -> None:
    """Write protective MBR, primary and backup GPT into the (pre-sized) file `path`."""
    size = path.stat().st_size
    total = size // sector
    last_lba = total - 1
    table = bytearray(ENTRIES * ENTRY_SIZE)
    for p in parts:
        name = p.name.encode("utf-16-le")[:72]
        struct.pack_into(
            "<16s16sQQQ72s",
            table,
            (p.index - 1) * ENTRY_SIZE,
            uuid.UUID(p.type_guid).bytes_le,
            uuid.UUID(p.unique_guid).bytes_le,
            p.first_lba,
            p.last_lba,
            0,
            name,
        )
    crc = zlib.crc32(bytes(table))
    table_sectors = len(table) // sector
    backup_entries = last_lba - table_sectors
    mbr = bytearray(sector)
    struct.pack_into(
        "<B3sB3sII",
        mbr,
        446,
        0,
        b"\x00\x02\x00",
        0xEE,
        b"\xff\xff\xff",
        1,
        min(total - 1, 0xFFFFFFFF),
    )
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(mbr)
        f.write(_header(sector, 1, last_lba, 2, last_lba, disk_guid, crc))
        f.write(table)
        f.seek(backup_entries * sector)
        f.write(table)
        f.write(_header(sector, last_lba, 1, backup_entries, last_lba, disk_guid, crc))
