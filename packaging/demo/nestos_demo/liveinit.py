"""/init of the demo systemd live rootfs: a tiny stand-in for Ignition, then exec systemd.

Applies the live Ignition config that `iso/pxe customize` embed as /config.ign (storage.files
with data: URLs, systemd.units), so installer.d exists before the generators run. Stdlib only.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List

CONFIG = Path("/config.ign")
SYSTEMD = "/lib/systemd/systemd"
UNIT_DIR = Path("etc/systemd/system")


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded)."""
    if not url.startswith("data:") or "," not in url:
        raise ValueError("only data: URLs are supported in the live config")
    meta, _, payload = url[5:].partition(",")
    if meta.split(";")[-1] == "base64":
        return base64.b64decode(payload)
    return urllib.parse.unquote_to_bytes(payload)


def _safe_path(root: Path, path: str) -> Path:
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or any(p in (".", "..") for p in parts) or not parts:
        raise ValueError(f"refusing path {path!r}")
    return root.joinpath(*parts)


def _install_targets(contents: str) -> List[str]:
    """`WantedBy=x.wants` / `RequiredBy=x.requires` symlink dirs from the [Install] section."""
    dirs: List[str] = []
    section = ""
    for line in contents.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, _, value = line.partition("=")
            suffix = {"WantedBy": ".wants", "RequiredBy": ".requires"}.get(key.strip())
            if suffix:
                dirs += [t + suffix for t in value.split()]
    return dirs


def apply(config: Dict[str, Any], root: Path) -> List[str]:
    """Write files and units of `config` under `root`; return what was done (paths only)."""
    done: List[str] = []
    for f in config.get("storage", {}).get("files", []):
        dest = _safe_path(root, f["path"])
        contents = f.get("contents", {})
        data = decode_data_url(contents.get("source", "data:,"))
        if contents.get("compression") == "gzip":
            data = gzip.decompress(data)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(f.get("mode", 0o644)))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(dest, int(f.get("mode", 0o644)))
        done.append(f"file {f['path']}")
    units = root / UNIT_DIR
    for u in config.get("systemd", {}).get("units", []):
        name = u["name"]
        if "/" in name or name.startswith("."):
            raise ValueError(f"refusing unit name {name!r}")
        units.mkdir(parents=True, exist_ok=True)
        if "contents" in u:
            (units / name).write_text(u["contents"])
        if u.get("enabled"):
            for d in _install_targets((units / name).read_text()):
                (units / d).mkdir(exist_ok=True)
                link = units / d / name
                if not link.is_symlink():
                    link.symlink_to(f"../{name}")
        done.append(f"unit {name}")
    return done


def main() -> None:
    if CONFIG.exists():
        try:
            config = json.loads(CONFIG.read_text())
            for what in apply(config, Path("/")):
                print(f"nestos-live-ignition: {what}", flush=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"nestos-live-ignition: cannot apply {CONFIG}: {e}", flush=True)
    os.execv(SYSTEMD, [SYSTEMD, *sys.argv[1:]])


if __name__ == "__main__":
    main()
