"""The interface every streaming verifier program sits behind (gpg, sqv), and the private files
they share in the verifier's temporary GNUPGHOME. Imports the policy only (no gnupg).
"""

from __future__ import annotations

import abc
import os
from typing import List, Optional

from nestos_installer.signature.policy import VerifiedSignature


def private_file(home: str, name: str, data: bytes) -> str:
    """Write `data` to a new file `name` in `home`, mode 0600; return its path."""
    path = os.path.join(home, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


class Backend(abc.ABC):
    """One verifier program, started by the constructor on a signature and our keys, reading
    the data the SignatureVerifier's writer thread passes it through `data_fd()`."""

    name = ""

    def __init__(self) -> None:
        self.messages: List[str] = []  # what the verifier printed

    @property
    @abc.abstractmethod
    def setup_error(self) -> Optional[BaseException]:
        """An error met beside the stream (gpg refused a key file), to re-raise in the caller."""

    @abc.abstractmethod
    def ended(self) -> bool:
        """The verifier quit (it cannot succeed any more: a bad signature or key file)."""

    @abc.abstractmethod
    def data_fd(self) -> Optional[int]:
        """In the writer thread: the descriptor to write the data to (the caller closes it), or
        None if the verifier quit without reading."""

    @abc.abstractmethod
    def finish(self, delivered: bool, writer_error: Optional[BaseException]) -> VerifiedSignature:
        """After the writer ended (`delivered`: it passed every byte and closed the data
        channel): wait for the verifier and return the signer, or raise BadSignature."""

    @abc.abstractmethod
    def abort(self) -> None:
        """No verdict wanted: let helper threads end (bounded waits), leave no process behind."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Leave no process behind (also on a failure before the writer thread started)."""
