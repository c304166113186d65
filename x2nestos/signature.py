"""Detached OpenPGP signature checks with gpgv (or gpg) through nestos_installer.run.

No python-gnupg (not on an old host): keys are de-armored here into a throw-away keyring, and
only a `VALIDSIG` status from a key in that keyring counts.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path
from typing import List, Sequence

from nestos_installer import run as runner
from nestos_installer.errors import BadSignature, ConfigError, ToolMissing


def dearmor(data: bytes) -> bytes:
    """Binary packets of every ASCII-armored public key block in data (binary input as is)."""
    if b"-----BEGIN PGP" not in data:
        return data
    out = b""
    for block in re.findall(
        rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----",
        data,
        re.S,
    ):
        body = block.split(b"\n\n", 1)[-1] if b"\n\n" in block else block
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(b"=") and b":" not in ln]
        try:
            out += base64.b64decode(b"".join(lines), validate=True)
        except ValueError as e:
            raise ConfigError("decoding an ASCII-armored public key") from e
    return out


def default_keys() -> List[bytes]:
    """Keys shipped with nestos-installer (package data, also inside the zipapp)."""
    try:
        from importlib.resources import files

        keydir = files("nestos_installer") / "keys"
        return [p.read_bytes() for p in keydir.iterdir() if p.name.endswith(".asc")]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, OSError):
        return []


def _status_fpr(status: str) -> str:
    m = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{16,})", status, re.M)
    return m.group(1) if m else ""


def verify(data_path: Path, sig_path: Path, keys: Sequence[bytes]) -> str:
    """Raise BadSignature unless sig_path is a good signature of data_path by one of keys.

    Returns the signing key's fingerprint.
    """
    if not keys:
        raise BadSignature(
            f"no trusted keys to verify {data_path.name} with",
            hint="pass --keyring FILE, or --insecure to skip verification",
        )
    with tempfile.TemporaryDirectory(prefix="x2nestos-gpg-") as tmp:
        keyring = Path(tmp) / "trusted.gpg"
        keyring.write_bytes(b"".join(dearmor(k) for k in keys))
        if runner.have_tool("gpgv"):
            argv = ["gpgv", "--homedir", tmp, "--status-fd", "1", "--keyring", str(keyring)]
        elif runner.have_tool("gpg"):
            argv = [
                "gpg",
                "--batch",
                "--homedir",
                tmp,
                "--no-default-keyring",
                "--keyring",
                str(keyring),
                "--status-fd",
                "1",
                "--verify",
            ]
        else:
            raise ToolMissing("gpgv not found, needed to verify artifact signatures")
        proc = runner.run(argv + [str(sig_path), str(data_path)], check=False, timeout=600)
    status = proc.stdout.decode(errors="replace")
    fpr = _status_fpr(status)
    if proc.returncode == 0 and fpr:
        return fpr
    if "NO_PUBKEY" in status:
        why = "signed by a key that is not trusted"
    elif "BADSIG" in status:
        why = "bad signature (the data was modified)"
    else:
        why = "signature does not verify"
    raise BadSignature(f"{data_path.name}: {why}")
