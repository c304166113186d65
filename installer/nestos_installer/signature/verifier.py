"""The streaming signature check of the install and download pipelines: `feed()` raw bytes,
`finish()` gives the signer; backend from `NESTOS_INSTALLER_VERIFIER=gpg|sqv|auto`.
Imports errors, run, pipeline.readers and the signature package.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from types import TracebackType
from typing import List, Optional, Type

from nestos_installer.errors import UsageError, VerificationError
from nestos_installer.pipeline.readers import Reader, copy_stream
from nestos_installer.run import have_tool, require_tool, run
from nestos_installer.signature.backend import Backend
from nestos_installer.signature.gpg import GpgBackend
from nestos_installer.signature.policy import (
    ABORTED,
    ENDED_EARLY,
    Keyring,
    VerifiedSignature,
    refused,
)
from nestos_installer.signature.sqv import SqvBackend

_QUEUE_CHUNKS = 8  # feed() runs ahead of the verifier by at most this many chunks
VERIFIER_ENV = "NESTOS_INSTALLER_VERIFIER"
BACKENDS = ("sqv", "gpg")


def choose_backend(requested: Optional[str] = None) -> str:
    """`sqv` or `gpg`: `requested`, else $NESTOS_INSTALLER_VERIFIER, else sqv when installed."""
    name = (requested or os.environ.get(VERIFIER_ENV) or "auto").strip().lower()
    if name == "auto":
        return "sqv" if have_tool("sqv") else "gpg"
    if name not in BACKENDS:
        raise UsageError(f"{VERIFIER_ENV} must be sqv, gpg or auto, not '{name}'")
    if name == "sqv":
        require_tool("sqv", "verify the image signature (as $" + VERIFIER_ENV + " asks)")
    return name


class SignatureVerifier:
    """Checks a detached signature over bytes handed to `feed()`; the verdict is `finish()`.

    Usable as a context manager: leaving without `finish()` aborts; the temporary GNUPGHOME is
    always removed. feed() only queues the chunk; a writer thread pushes it into the verifier
    (sqv's stdin or gpg's FIFO).
    """

    def __init__(
        self,
        signature: bytes,
        keyring: Keyring,
        *,
        backend: Optional[str] = None,
        defer_key_import: bool = False,
    ) -> None:
        """`defer_key_import`: with sqv, import the keys into gpg (to judge the signer) only in
        finish(), for callers that have idle time there (install: the final fsync) rather
        than spare CPU during the stream."""
        require_tool("gpg", "verify the image signature")
        self.backend = choose_backend(backend)
        self.keyring = keyring
        key_data = keyring.read()  # a missing key file fails here, before any work
        home = tempfile.mkdtemp(prefix="nestos-gpg-")  # mode 0700
        self._home: Optional[str] = home
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._writer_error: Optional[BaseException] = None
        self._delivered = False  # the writer passed every byte and closed the data channel
        self._stop = threading.Event()
        self._done = False
        self._verdict: Optional[VerifiedSignature] = None
        impl: Optional[Backend] = None
        try:
            # gpg's key import runs in a thread, beside the stream (or from finish()), never
            # before it: sqv starts at once on the same key files and gpg's verdict on the
            # keys is joined in finish(); the gpg backend imports, then opens the FIFO.
            if self.backend == "sqv":
                impl = SqvBackend(
                    home, signature, keyring, key_data, defer_key_import=defer_key_import
                )
            else:
                impl = GpgBackend(home, signature, keyring, key_data)
            self._backend: Backend = impl
            self._writer = threading.Thread(target=self._write, name="verify-feeder", daemon=True)
            self._writer.start()
        except BaseException:
            if impl is not None:
                impl.kill()
            self._cleanup()
            raise

    @property
    def gpg_messages(self) -> List[str]:
        """What the verifier printed (either backend), once finished."""
        return list(self._backend.messages)

    def _write(self) -> None:
        fd: Optional[int] = None
        try:
            fd = self._backend.data_fd()
            complete = fd is not None
            while True:
                chunk = self._queue.get()
                if chunk is None:
                    break
                if fd is None or self._stop.is_set():
                    continue  # the verifier is gone or we abort: keep draining the queue
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                except BrokenPipeError:
                    os.close(fd)
                    fd = None
                    complete = False
            self._delivered = complete and not self._stop.is_set()
        except BaseException as e:
            self._writer_error = e
            while self._queue.get() is not None:  # keep feed() from blocking forever
                pass
        finally:
            if fd is not None:
                os.close(fd)

    def feed(self, data: bytes) -> None:
        """Pass the next raw bytes (every byte of the file, in order, exactly once)."""
        if self._stop.is_set():
            return  # aborted: the producer may still be winding down
        backend = self._backend
        if backend.setup_error is not None:
            raise backend.setup_error
        if self._done:
            raise VerificationError("signature verifier fed after it finished")
        if backend.ended():
            # The verifier quit before the end of the data (a bad signature or key file): say
            # why now, not after the whole image streamed.
            self.finish()
            raise refused(ENDED_EARLY)
        if not data:
            return
        chunk = bytes(data)  # the producer may reuse its buffer
        while True:
            try:
                self._queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():  # aborted meanwhile: nobody drains the queue any more
                    return

    def finish(self) -> VerifiedSignature:
        """End of data: wait for the verifier and return the signer, or raise BadSignature."""
        if self._done:
            if self._verdict is None:
                raise refused(ABORTED)
            return self._verdict
        self._done = True
        try:
            self._queue.put(None)
            self._writer.join()
            self._verdict = self._backend.finish(self._delivered, self._writer_error)
            return self._verdict
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Stop without a verdict (the download or install failed); removes the temp home."""
        if self._done:
            return
        self._done = True
        self._stop.set()
        try:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._backend.abort()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        home = getattr(self, "_home", None)
        if home is None:
            return
        self._home = None
        if any(name.startswith("S.") for name in os.listdir(home)) and have_tool("gpgconf"):
            # An agent started despite --no-autostart (old gpg): stop it before removing home.
            run(["gpgconf", "--homedir", home, "--kill", "all"], check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    def __enter__(self) -> SignatureVerifier:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._verdict is None:
            self.abort()


def verify_bytes(data_reader: Reader, signature: bytes, keyring: Keyring) -> VerifiedSignature:
    """Read `data_reader` to EOF through a SignatureVerifier and return the signer."""
    with SignatureVerifier(signature, keyring) as verifier:
        copy_stream(data_reader, verifier.feed)
        return verifier.finish()


__all__ = [
    "BACKENDS",
    "VERIFIER_ENV",
    "SignatureVerifier",
    "choose_backend",
    "verify_bytes",
]
