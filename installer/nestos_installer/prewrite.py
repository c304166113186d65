"""Checks before the first write of an install under a dead-man switch: memory, the planned
target's identity, the image signature as far as it is known before the data. Imports disks,
source, signature, run, errors, deadman; never a verb or blockdev.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List

from nestos_installer import disks
from nestos_installer.deadman import TargetIdentity
from nestos_installer.errors import NestosError, VerificationError
from nestos_installer.run import have_tool, require_tool, run
from nestos_installer.signature.backend import private_file
from nestos_installer.signature.gpg import GpgKeys
from nestos_installer.signature.policy import (
    GpgStatus,
    Keyring,
    TrustedKey,
    refused,
    unknown_key,
)
from nestos_installer.signature.verifier import SignatureVerifier
from nestos_installer.source import ImageSource

Say = Callable[[str], None]
MEMINFO = Path("/proc/meminfo")


class PrewriteFailed(NestosError):
    """A pre-write check failed: nothing was written."""


def available_memory(meminfo: Path = MEMINFO) -> int:
    """MemAvailable in bytes (the live system runs from RAM: this is what the install has)."""
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "MemAvailable":
            return int(rest.split()[0]) * 1024
    raise PrewriteFailed(f"no MemAvailable in {meminfo}")


def check_memory(minimum: int, meminfo: Path = MEMINFO) -> int:
    have = available_memory(meminfo)
    if have < minimum:
        raise PrewriteFailed(
            f"not enough memory: {have >> 20} MiB available, the install needs {minimum >> 20} MiB"
        )
    return have


def check_identity(dest: str, want: TargetIdentity, root: Path = disks.ROOT) -> disks.TargetDisk:
    """The target is the whole physical disk the plan was made for: `dest` resolves (through
    the same rules as the plan: never a partition, dm or md device) to a disk of the planned
    size and serial, and is the planned stable path."""
    try:
        found = disks.resolve(dest, root)
        planned = disks.whole_disk(want.path, root)
    except NestosError as e:
        raise PrewriteFailed(f"target {dest} is not the planned disk {want.path}: {e}") from e
    if planned != found.name:
        raise PrewriteFailed(f"target {dest} is /dev/{found.name}, the plan named /dev/{planned}")
    if want.size is not None and found.size != want.size:
        raise PrewriteFailed(f"target {dest} has {found.size} bytes, the plan saw {want.size}")
    if want.serial and (found.serial or "").replace(" ", "") != want.serial.replace(" ", ""):
        raise PrewriteFailed(
            f"target {dest} has serial {found.serial!r}, the plan saw {want.serial!r}"
        )
    return found


def check_signature(src: ImageSource, keyring: Keyring, say: Say) -> None:
    """The signature as far as it can be proven before writing, without a second download.

    A local image (the live media's own): verified in full now, then rewound. A remote one:
    its detached signature was fetched; it must parse and name a trusted key that is neither
    revoked nor expired. Its data is verified while streaming, with the first MiB held back.
    """
    if src.signature is None:
        return  # --insecure allowed it (source.require_signature); nothing to check
    reader = src.reader
    if isinstance(reader, io.BufferedReader) and reader.seekable():
        with SignatureVerifier(src.signature, keyring) as verifier:
            chunk = reader.read(1 << 20)
            while chunk:
                verifier.feed(chunk)
                chunk = reader.read(1 << 20)
            who = verifier.finish()
        reader.seek(0)
        say(f"Verified signature of {src.name} by {who.username or who.key_id} before writing")
        return
    key = signature_issuer(src.signature, keyring)
    say(f"Signature of {src.name} names trusted key {key.key_id}; data checked while writing")


def signature_issuer(signature: bytes, keyring: Keyring) -> TrustedKey:
    """The trusted key a detached signature names, judged without the data: gpg verifies it
    over empty data, which says BADSIG with the key id for a key of ours, NO_PUBKEY for
    another's and NODATA for a signature that does not parse."""
    require_tool("gpg", "check the image signature")
    home = tempfile.mkdtemp(prefix="nestos-gpg-")
    try:
        keys = GpgKeys(home, keyring.files, keyring.read())
        if not keys.load():
            assert keys.error is not None
            raise keys.error
        sig = private_file(home, "signature", signature)
        empty = private_file(home, "empty", b"")
        result = keys.gpg.verify_file(io.BytesIO(b""), extra_args=[sig, empty])
        status = GpgStatus.parse(str(getattr(result, "stderr", "") or ""))
        return _judge_issuer(status, keys)
    finally:
        if any(n.startswith("S.") for n in os.listdir(home)) and have_tool("gpgconf"):
            run(["gpgconf", "--homedir", home, "--kill", "all"], check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def _judge_issuer(status: GpgStatus, keys: GpgKeys) -> TrustedKey:
    codes = status.codes
    if "NO_PUBKEY" in codes:
        raise refused(unknown_key(f"0x{codes['NO_PUBKEY'][0][0]}"))
    named = [w[0] for c in ("BADSIG", "EXPKEYSIG", "REVKEYSIG") for w in codes.get(c, []) if w]
    named += [_fpr(w) for w in codes.get("VALIDSIG", []) if w]  # a signature over no data
    if not named:
        raise refused(status.problem(keys.by_fingerprint) or "no valid OpenPGP signature found")
    want = named[0].upper()
    for fpr, key in keys.by_fingerprint.items():
        if fpr.endswith(want):
            problem = key.problem()
            if problem is not None:
                raise refused(problem)
            return key
    raise VerificationError(f"signature names key {want}, which is not trusted")


def _fpr(validsig: List[str]) -> str:
    return str(validsig[9] if len(validsig) >= 10 else validsig[0])
