"""Stream metadata for the demo build (installer.md §8), pointing at any base URL.

The build records names and digests in manifest.json; write_stream() turns them into
streams/demo.json for the base URL a test or the `run` command serves the build directory on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

STREAM = "demo"
ARCH = "x86_64"

# stream format -> artifact type -> manifest key
FORMATS = {
    "raw.xz": {"disk": "raw_xz"},
    "4k.raw.xz": {"disk": "raw_4k_xz"},
    "iso": {"disk": "iso"},
    "pxe": {"kernel": "pxe_kernel", "initramfs": "pxe_initramfs", "rootfs": "pxe_rootfs"},
}


def stream_document(manifest: Dict[str, Any], base_url: str) -> Dict[str, Any]:
    """The stream JSON for a build manifest, with every location under `base_url`."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    files = manifest["files"]
    formats: Dict[str, Dict[str, Dict[str, str]]] = {}
    for fmt, types in FORMATS.items():
        formats[fmt] = {}
        for kind, key in types.items():
            f = files[key]
            entry = {
                "location": base + f["name"],
                "signature": base + f["name"] + ".sig",
                "sha256": f["sha256"],
            }
            if f.get("uncompressed-sha256"):
                entry["uncompressed-sha256"] = f["uncompressed-sha256"]
            formats[fmt][kind] = entry
    return {
        "stream": STREAM,
        "metadata": {"last-modified": manifest["built"], "generator": "nestos_demo"},
        "architectures": {
            ARCH: {"artifacts": {"metal": {"release": manifest["version"], "formats": formats}}}
        },
    }


def write_stream(out_dir: Path, base_url: str, dest: Optional[Path] = None) -> Path:
    """Write the stream JSON (default `<out_dir>/streams/demo.json`) atomically; return its path.

    Tests sharing one build directory should pass their own `dest` to avoid racing each other.
    """
    manifest = json.loads((out_dir / "manifest.json").read_text())
    path = dest if dest is not None else out_dir / "streams" / f"{STREAM}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stream_document(manifest, base_url), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
