"""NetworkManager's own keyfiles: already the target format, carried verbatim once they parse.

stdlib + hostfacts + netfiles only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from x2nestos.hostfacts import HostFileError, host_name, read_host_text
from x2nestos.netfiles import keyfile, model
from x2nestos.netfiles.model import Skipped

NM_DIR = "etc/NetworkManager/system-connections"
# Carried file names end up in the payload and in the printed plan: nothing exotic.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9_.@+ -]{1,200}")


@dataclass(frozen=True)
class HostKeyfile:
    """One of the host's keyfiles, carried as it is."""

    file_name: str  # under system-connections on NestOS
    text: str
    info: keyfile.KeyfileInfo
    source: str
    device: Optional[str]  # the interface it configures, when the host tells us

    @property
    def stem(self) -> str:
        return re.sub(r"\.nmconnection$", "", self.file_name)


def why(err: HostFileError, source: str) -> str:
    """The reason of an error, without the file name the Skipped line already shows."""
    text = str(err)
    return text[len(source) + 2 :] if text.startswith(source + ": ") else text


def _one(root: Path, f: Path, skipped: List[Skipped]) -> Optional[HostKeyfile]:
    rel = f"{NM_DIR}/{f.name}"
    source = model.shown(host_name(rel))
    if not FILE_NAME_RE.fullmatch(f.name):
        skipped.append(Skipped(source, source, "file name cannot be carried (unusual characters)"))
        return None
    try:
        text = read_host_text(root, rel)
        info = keyfile.parse(text, source)
    except HostFileError as e:
        skipped.append(Skipped(source, source, why(e, source)))
        return None
    if info.type in keyfile.NOT_CARRIED_TYPES:
        skipped.append(Skipped(source, source, f"{info.type} connection"))
        return None
    name = f.name if f.name.endswith(".nmconnection") else f.name + ".nmconnection"
    device = info.interface_name or (model.iface_of_mac(root, info.mac) if info.mac else None)
    return HostKeyfile(name, text, info, source, device)


def read_nm_keyfiles(root: Path, skipped: List[Skipped]) -> List[HostKeyfile]:
    d = root / NM_DIR
    out = []
    for f in sorted(d.glob("*")) if d.is_dir() else []:
        found = _one(root, f, skipped)
        if found is not None:
            out.append(found)
    return out
