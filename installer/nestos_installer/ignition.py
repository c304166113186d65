"""Ignition configs for the installed system: validate up front, write config.ign (0600 in a
0700 directory), copy NetworkManager keyfiles. Never logs a config's contents.

Imports `errors`, `untrusted` (bounded reads and JSON) only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from nestos_installer import untrusted
from nestos_installer.errors import ConfigError, HashMismatch, TargetError, UsageError

SUPPORTED_MAJOR = 3
_DIGEST_BITS = {"sha256": 256, "sha512": 512}


@dataclass(frozen=True)
class IgnitionHash:
    """`--ignition-hash` value: `sha256-<hex>` or `sha512-<hex>`."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, spec: str) -> IgnitionHash:
        kind, sep, hexdigest = spec.partition("-")
        if not sep:
            raise UsageError(f"failed to detect hash-type and digest in '{spec}'")
        if kind not in _DIGEST_BITS:
            raise UsageError(f"unknown hash type '{kind}'")
        try:
            if len(hexdigest) % 2 or not all(c in "0123456789abcdefABCDEF" for c in hexdigest):
                raise ValueError(f"invalid hex string '{hexdigest}'")
            digest = bytes.fromhex(hexdigest)
        except ValueError as e:
            raise UsageError("decoding hex digest") from e
        if len(digest) * 8 != _DIGEST_BITS[kind]:
            raise UsageError(f"wrong digest length ({len(digest) * 8})")
        return cls(kind, digest)

    def hasher(self) -> Any:
        """A fresh hashlib object for streaming use; pass it to `check`."""
        return hashlib.new(self.algorithm)

    def check(self, computed: bytes) -> None:
        if not hmac.compare_digest(computed, self.digest):
            raise HashMismatch(
                f"hash mismatch, computed '{computed.hex()}' but expected '{self.digest.hex()}'"
            )

    def verify(self, data: bytes) -> None:
        self.check(hashlib.new(self.algorithm, data).digest())

    def __str__(self) -> str:
        return f"{self.algorithm}-{self.digest.hex()}"


def read_config(path: Path, what: str = "source Ignition config") -> bytes:
    """A local Ignition config's bytes, with the cap of an Ignition URL fetch."""
    return untrusted.read_file(path, what, limit=untrusted.IGNITION_MAX)


def parse(data: bytes, source: str) -> Dict[str, Any]:
    """A JSON object (bounded in depth) with a string `ignition.version`, or a ConfigError."""
    doc = untrusted.parse_json(data, f"parsing specified Ignition config {source}")
    if not isinstance(doc, dict):
        raise ConfigError(f"parsing specified Ignition config {source}: not a JSON object")
    ign = doc.get("ignition")
    version = ign.get("version") if isinstance(ign, dict) else None
    if not isinstance(version, str):
        raise ConfigError(
            f"parsing specified Ignition config {source}: missing ignition.version",
            hint='an Ignition config needs {"ignition": {"version": "3.x.0"}}; '
            "convert Butane with `butane` first",
        )
    return doc


def validate(data: bytes, source: str) -> None:
    """JSON object with a 3.x `ignition.version` (newer minor versions pass, as upstream)."""
    version = parse(data, source)["ignition"]["version"]
    major = version.split(".", 1)[0]
    if major != str(SUPPORTED_MAJOR):
        raise ConfigError(
            f"parsing specified Ignition config {source}: unsupported version {version!r}",
            hint="NestOS needs an Ignition spec 3.x config",
        )


def write_config(boot: Path, data: bytes, expected: Optional[IgnitionHash]) -> None:
    """Write boot/ignition/config.ign exclusively with mode 0600 (directory 0700)."""
    if expected is not None:
        expected.verify(data)
    d = boot / "ignition"
    if not d.exists():
        os.mkdir(d, 0o700)
    os.chmod(d, 0o700)
    path = d / "config.ign"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise TargetError(f"{path.name} already exists on the boot partition") from e
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


NETWORK_DIR_NAME = "nestos-firstboot-network"


def copy_network(boot: Path, source: Path, say: Callable[[str], None]) -> List[str]:
    """Copy every regular file directly in `source` to boot/nestos-firstboot-network/."""
    dest = boot / NETWORK_DIR_NAME
    dest.mkdir(mode=0o700, exist_ok=True)
    copied = []
    for entry in sorted(source.iterdir()):
        if entry.is_file() and not entry.is_symlink():
            say(f"Copying {entry} to installed system")
            target = dest / entry.name
            shutil.copyfile(entry, target)
            os.chmod(target, 0o600)
            copied.append(entry.name)
    return copied
