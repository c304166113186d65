"""The demo Ignition config (spec 3.3.0): user `core` with a demo SSH key and one file.

It carries no secret, but installers must still treat it as if it did (0600 / 0700).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict

from nestos_demo.util import run

DEMO_FILE = "/etc/nestos-demo"
DEMO_FILE_TEXT = "installed by the nestos-installer demo\n"


def demo_ssh_key() -> str:
    """A well-formed ssh-ed25519 public key line whose private half exists nowhere."""
    point = hashlib.sha256(b"nestos-demo-ssh-key").digest()
    blob = b"".join(struct.pack(">I", len(x)) + x for x in (b"ssh-ed25519", point))
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " demo@nestos"


def demo_config() -> Dict[str, Any]:
    quoted = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in DEMO_FILE_TEXT)
    return {
        "ignition": {"version": "3.3.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [demo_ssh_key()]}]},
        "storage": {
            "files": [{"path": DEMO_FILE, "mode": 0o644, "contents": {"source": "data:," + quoted}}]
        },
    }


def write_demo_config(path: Path) -> Path:
    """Write the config (compact JSON + newline), mode 0600; check it with ignition-validate."""
    text = json.dumps(demo_config(), separators=(",", ":")) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
        f.write(text)
    tmp = Path(f.name)
    tmp.chmod(0o600)
    if shutil.which("ignition-validate"):
        run(["ignition-validate", tmp])
    tmp.replace(path)
    return path
