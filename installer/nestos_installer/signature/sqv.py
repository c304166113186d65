"""The sqv backend: Sequoia's signature verifier reads the raw bytes on its stdin (a 1 MiB pipe);
the signer it names is judged by gpg's listing of our keys. Imports run (for sqv) and the gpg
backend's key import.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import List, Optional

from nestos_installer.run import PIPE, Popen, TimeoutExpired, spawn
from nestos_installer.signature.backend import Backend, private_file
from nestos_installer.signature.gpg import GpgKeys
from nestos_installer.signature.policy import (
    BAD_SIGNATURE,
    NO_SIGNATURE,
    UNCHECKED,
    Keyring,
    VerifiedSignature,
    check_verdict,
    judge_signer,
    key_expired,
    key_revoked,
    refused,
    signing_key,
    unknown_key,
)

log = logging.getLogger(__name__)


def sqv_problem(err: str, returncode: int) -> str:
    """What sqv's complaint on stderr means, in the policy's words."""
    missing = re.search(r"Missing key ([0-9A-Fa-f]{16,40})", err)
    if missing:
        return unknown_key(f"0x{missing.group(1)[-16:].upper()}")
    if "manipulated" in err:
        return BAD_SIGNATURE
    if re.search(r"Malformed|Reading \S*signature|No signature", err, re.IGNORECASE):
        return NO_SIGNATURE
    bad_key = re.search(r"Signing key on ([0-9A-Fa-f]{16,40}) is bad", err)
    who = signing_key(bad_key.group(1)[-16:].upper()) if bad_key else "signing key"
    if "revoked" in err.lower():
        return key_revoked(who)
    if "expired" in err.lower():
        return key_expired(f"{who} or the signature")
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    detail = lines[0] if lines else f"exit status {returncode}"
    return f"{UNCHECKED} ({detail})"


class SqvBackend(Backend):
    """sqv over our key files, started at once; gpg's key import runs in a thread beside the
    stream, or only in finish() (`defer_key_import`: install's final fsync leaves idle time).

    gpg hashes the data of a detached signature one byte at a time (~270 MiB/s here, slower
    than loopback HTTP); sqv hashes in blocks (~1 GiB/s), so verification keeps up with the
    download. sqv reads the same key files that gpg imports; the signer sqv names must be a
    key gpg accepted and lists as neither expired nor revoked (as gpg judges).
    """

    name = "sqv"

    def __init__(
        self,
        home: str,
        signature: bytes,
        keyring: Keyring,
        key_data: List[bytes],
        *,
        defer_key_import: bool = False,
    ) -> None:
        super().__init__()
        self._home = home
        self._keys = GpgKeys(home, keyring.files, key_data)
        sig_path = private_file(home, "signature", signature)
        rings = [private_file(home, f"key{i}", data) for i, data in enumerate(key_data)] or [
            private_file(home, "no-keys", b"")
        ]
        self._proc = self._start_sqv(sig_path, rings)
        try:
            self._thread = threading.Thread(target=self._keys.load, name="gpg-keys", daemon=True)
            if not defer_key_import:
                self._thread.start()
        except BaseException:
            self.kill()
            raise

    def _start_sqv(self, sig_path: str, rings: List[str]) -> Popen[bytes]:
        out = open(os.path.join(self._home, "sqv.out"), "wb")  # closed below, once sqv has them
        err = open(os.path.join(self._home, "sqv.err"), "wb")
        argv = ["sqv"]
        for ring in rings:
            argv += ["--keyring", ring]
        try:
            return spawn(
                [*argv, sig_path, "/dev/stdin"],
                stdin=PIPE,
                stdout=out,
                stderr=err,
                reason="verify the image signature",
                pipe_size=1 << 20,
            )
        finally:
            out.close()
            err.close()

    @property
    def setup_error(self) -> Optional[BaseException]:
        return self._keys.error

    def ended(self) -> bool:
        return self._proc.poll() is not None

    def data_fd(self) -> Optional[int]:
        """A dup of sqv's stdin, for the writer thread to own."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            return os.dup(stdin.fileno())
        finally:
            stdin.close()

    def finish(self, delivered: bool, writer_error: Optional[BaseException]) -> VerifiedSignature:
        if self._thread.ident is None:  # deferred import: now
            self._thread.start()
        self._thread.join()
        if self._keys.error is not None:
            self.kill()
            raise self._keys.error
        self._proc.wait()
        if writer_error is not None:
            raise refused("feeding data to sqv") from writer_error
        with open(os.path.join(self._home, "sqv.err"), "rb") as f:
            err = f.read().decode(errors="replace")
        with open(os.path.join(self._home, "sqv.out"), "rb") as f:
            out = f.read().decode(errors="replace")
        self.messages.extend(ln.rstrip() for ln in err.splitlines() if ln.strip())
        for line in self.messages:
            log.debug("sqv: %s", line)
        rc = self._proc.returncode
        check_verdict(sqv_problem(err, rc) if rc != 0 else None, delivered=delivered, tool="sqv")
        signers = [ln.strip().upper() for ln in out.splitlines() if ln.strip()]
        return judge_signer(signers, self._keys.by_fingerprint)

    def abort(self) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        self.kill()

    def kill(self) -> None:
        """sqv sees EOF once the writer closed its stdin and exits; never leave it behind."""
        proc = self._proc
        if proc.poll() is not None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except TimeoutExpired:
            proc.kill()
            proc.wait()
