"""The demo Ignition configs (spec 3.3.0): the busybox image's (user `core` with a demo SSH key
and one file) and the first-boot image's (user, groups, files with modes, a unit, hostname).
They carry no secret, but installers must still treat them as if they did (0600 / 0700).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

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
    """Write the busybox image's demo config, mode 0600 (see write_config)."""
    return write_config(path, demo_config())


# The first-boot image's demo config: what Ignition applies on the installed system's first boot.
FIRSTBOOT_USER = "core"
FIRSTBOOT_GROUP = "nestos-demo"
FIRSTBOOT_HOSTNAME = "nestos-demo"
FIRSTBOOT_UNIT = "nestos-demo-hello.service"
FIRSTBOOT_UNIT_OUTPUT = "/var/lib/nestos-demo/hello"
HELLO_UNIT = f"""[Unit]
Description=NestOS demo: a unit from the Ignition config
ConditionPathExists=!{FIRSTBOOT_UNIT_OUTPUT}

[Service]
Type=oneshot
StateDirectory=nestos-demo
ExecStart=/bin/sh -c 'echo "hello from $(hostname), by {FIRSTBOOT_UNIT}" >{FIRSTBOOT_UNIT_OUTPUT}'

[Install]
WantedBy=multi-user.target
"""


def data_url(text: str) -> str:
    """A percent-encoded `data:` URL (what Butane writes for inline contents)."""
    return "data:," + "".join(c if c.isalnum() or c in "-_.~" else f"%{ord(c):02X}" for c in text)


def _file(path: str, text: str, mode: int, user: str = "", group: str = "") -> Dict[str, Any]:
    entry: Dict[str, Any] = {"path": path, "mode": mode, "contents": {"source": data_url(text)}}
    if user:
        entry["user"] = {"name": user}
    if group:
        entry["group"] = {"name": group}
    return entry


def firstboot_config(
    ssh_key: str, hostname: str = FIRSTBOOT_HOSTNAME, host_key: Optional[Tuple[str, str]] = None
) -> Dict[str, Any]:
    """Spec 3.3.0 (Debian's Ignition reads 3.0-3.3): user `core` (groups sudo and nestos-demo)
    with `ssh_key`; the hostname; /etc/nestos-demo (0640 core:nestos-demo); a unit that runs
    once. `host_key`: (private, public) text of an ed25519 SSH host key for sshd to use."""
    files = [
        _file("/etc/hostname", hostname + "\n", 0o644),
        _file(DEMO_FILE, DEMO_FILE_TEXT, 0o640, FIRSTBOOT_USER, FIRSTBOOT_GROUP),
    ]
    if host_key is not None:
        files.append(_file("/etc/ssh/ssh_host_ed25519_key", host_key[0], 0o600))
        files.append(_file("/etc/ssh/ssh_host_ed25519_key.pub", host_key[1], 0o644))
    return {
        "ignition": {"version": "3.3.0"},
        "passwd": {
            "groups": [{"name": FIRSTBOOT_GROUP}],
            "users": [
                {
                    "name": FIRSTBOOT_USER,
                    "groups": ["sudo", FIRSTBOOT_GROUP],
                    "sshAuthorizedKeys": [ssh_key],
                }
            ],
        },
        "storage": {"files": files},
        "systemd": {"units": [{"name": FIRSTBOOT_UNIT, "enabled": True, "contents": HELLO_UNIT}]},
    }


def write_config(path: Path, config: Dict[str, Any]) -> Path:
    """Write `config` (compact JSON + newline) with mode 0600; check it with ignition-validate."""
    text = json.dumps(config, separators=(",", ":")) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
        f.write(text)
    tmp = Path(f.name)
    tmp.chmod(0o600)
    if shutil.which("ignition-validate"):
        run(["ignition-validate", tmp])
    tmp.replace(path)
    return path
