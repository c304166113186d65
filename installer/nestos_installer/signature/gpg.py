"""The python-gnupg backend: `gpg --verify SIG FIFO` in the verifier's throw-away GNUPGHOME (never
the user's keyring), the FIFO fed by the writer thread; and `GpgKeys`, the import of our keys
that both backends judge signers by. Imports python-gnupg: never bundled in the x2nestos zipapp.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from nestos_installer.errors import ToolMissing, VerificationError
from nestos_installer.signature.backend import Backend, private_file
from nestos_installer.signature.policy import (
    GpgStatus,
    Keyring,
    TrustedKey,
    VerifiedSignature,
    check_verdict,
    fingerprint_map,
    refused,
)

log = logging.getLogger(__name__)

_OPEN_TIMEOUT = 120.0  # seconds gpg may take to open the data FIFO


def _gnupg() -> Any:
    import gnupg  # deferred: only the verifying commands pay for the import

    return gnupg


class GpgKeys:
    """Our keys imported into the temporary GNUPGHOME: `gpg` to verify with, and `by_fingerprint`
    (every (sub)key fingerprint gpg accepted -> its primary key), the trust set."""

    def __init__(self, home: str, files: Sequence[Path], key_data: List[bytes]) -> None:
        self._home = home
        self._files = list(files)
        self._key_data = key_data
        self.gpg: Any = None
        self.by_fingerprint: Dict[str, TrustedKey] = {}
        self.error: Optional[BaseException] = None  # gpg refused a key file

    def load(self) -> bool:
        """Import the keys into the temporary home (in a thread); False if gpg refused one."""
        try:
            self.gpg = self._make_gpg()
            self._import()
            return True
        except BaseException as e:  # re-raised by feed() / finish() in the caller's thread
            self.error = e
            return False

    def _make_gpg(self) -> Any:
        try:
            # --no-autostart: public-key operations need no agent, so none may linger.
            return _gnupg().GPG(gnupghome=self._home, options=["--no-autostart"])
        except (OSError, ValueError) as e:
            raise ToolMissing("gpg cannot be run, needed to verify the image signature") from e

    def _import(self) -> None:
        for path, data in zip(self._files, self._key_data):
            result = self.gpg.import_keys(data)
            if not [f for f in (result.fingerprints or []) if f]:
                raise VerificationError(f"no OpenPGP public key found in {path}")
        self.by_fingerprint = fingerprint_map(self.gpg.list_keys())


class GpgBackend(Backend):
    """`gpg --verify` through python-gnupg, reading the data from a FIFO in the home. Its
    thread imports the keys, then runs gpg; the writer opens the FIFO once gpg did."""

    name = "gpg"

    def __init__(
        self, home: str, signature: bytes, keyring: Keyring, key_data: List[bytes]
    ) -> None:
        super().__init__()
        self._keys = GpgKeys(home, keyring.files, key_data)
        self._result: Any = None
        self._gpg_error: Optional[BaseException] = None
        sig_path = private_file(home, "signature", signature)
        self._fifo = os.path.join(home, "data")
        os.mkfifo(self._fifo, 0o600)
        self._thread = threading.Thread(
            target=self._run_gpg, args=(sig_path,), name="gpg-verify", daemon=True
        )
        self._thread.start()

    @property
    def setup_error(self) -> Optional[BaseException]:
        return self._keys.error

    def ended(self) -> bool:
        return not self._thread.is_alive()

    def _run_gpg(self, sig_path: str) -> None:
        # `gpg --verify SIG DATA` with DATA = our FIFO. (python-gnupg's data_filename= form would
        # copy the signature into a temp file outside our home; extra_args keeps it inside.)
        if not self._keys.load():
            return  # the writer sees this thread gone and never opens the FIFO
        empty = io.BytesIO(b"")  # gpg's stdin: unused
        try:
            self._result = self._keys.gpg.verify_file(empty, extra_args=[sig_path, self._fifo])
        except BaseException as e:
            self._gpg_error = e

    def data_fd(self) -> Optional[int]:
        """Open the FIFO for writing once gpg opened it; None if gpg quit without opening it.

        Also when aborting: gpg blocks in open() until a writer shows up, so we show up and
        close at once, and gpg ends on the (bad) empty data instead of hanging.
        """
        deadline = time.monotonic() + _OPEN_TIMEOUT
        while True:
            try:
                fd = os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    return None
                time.sleep(0.002)
                continue
            os.set_blocking(fd, True)
            return fd

    def finish(self, delivered: bool, writer_error: Optional[BaseException]) -> VerifiedSignature:
        self._thread.join()
        if self._keys.error is not None:
            raise self._keys.error
        if writer_error is not None:
            raise refused("feeding data to gpg") from writer_error
        if self._gpg_error is not None:
            raise refused("running gpg") from self._gpg_error
        result = self._result
        status = GpgStatus.parse(str(getattr(result, "stderr", "") or ""))
        self.messages.extend(status.messages)
        for line in self.messages:
            log.debug("gpg: %s", line)
        check_verdict(status.problem(self._keys.by_fingerprint), delivered=delivered, tool="gpg")
        if getattr(result, "returncode", 0) not in (0, None) or not result.valid:
            raise refused(f"gpg reported {result.status or 'failure'}")
        return status.signer()

    def abort(self) -> None:
        self._thread.join(timeout=30)

    def kill(self) -> None:
        """Nothing to kill: gpg runs inside python-gnupg's call in our thread, and ends on the
        end of the FIFO (which the writer opens and closes even when aborting)."""
