"""Trust checks: streaming GPG verification of detached signatures, and Ignition digests.

Keys are imported through python-gnupg into a throw-away GNUPGHOME (never the user's keyring).
The data is checked while the install streams, by one of two backends:
- `sqv` (Sequoia's signature verifier) reading the raw bytes on its stdin, when it is installed.
  gpg hashes the data of a detached signature one byte at a time (~270 MiB/s here, slower than
  loopback HTTP); sqv hashes in blocks (~1 GiB/s), so verification keeps up with the download.
  It reads the same key files that gpg imports in a thread beside the stream; the signer sqv
  names must be a key gpg accepted and lists as neither expired nor revoked (as gpg judges).
- `gpg --verify SIG FIFO` through python-gnupg, reading a FIFO, everywhere else.
`NESTOS_INSTALLER_VERIFIER=gpg|sqv|auto` picks one. Imports errors, run, readers.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Optional, Sequence, Type

from nestos_installer.errors import (
    BadSignature,
    HashMismatch,
    ToolMissing,
    UsageError,
    VerificationError,
)
from nestos_installer.pipeline.readers import Reader, copy_stream
from nestos_installer.run import PIPE, Popen, TimeoutExpired, have_tool, require_tool, run, spawn

log = logging.getLogger(__name__)

PACKAGE_KEYS_DIR = Path(__file__).resolve().parent / "keys"
SYSTEM_KEYS_DIR = Path("/etc/nestos-installer/keys.d")
FAILURE = "GPG verification failure"
_OPEN_TIMEOUT = 120.0  # seconds gpg may take to open the data FIFO
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


class Keyring:
    """The OpenPGP public keys (armored or binary files) that image signatures must come from."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = [Path(f) for f in files]

    @classmethod
    def default(
        cls, extra: Sequence[Path] = (), *, system_dir: Optional[Path] = SYSTEM_KEYS_DIR
    ) -> Keyring:
        """Keys shipped in the package, then /etc/nestos-installer/keys.d/*.asc, then `extra`."""
        files = sorted(PACKAGE_KEYS_DIR.glob("*.asc"))
        if system_dir is not None and system_dir.is_dir():
            files += sorted(system_dir.glob("*.asc"))
        files += [Path(p) for p in extra]
        return cls(files)

    @property
    def files(self) -> List[Path]:
        return list(self._files)

    def __repr__(self) -> str:
        return f"Keyring({[str(f) for f in self._files]!r})"


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed: the primary key fingerprint (pinned to our keyring), key id and user id."""

    fingerprint: str
    key_id: str
    username: str


def _gnupg() -> Any:
    import gnupg  # deferred: only the verifying commands pay for the import

    return gnupg


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
        self.gpg_messages: List[str] = []  # what the verifier printed (either backend)
        key_data = self._read_keys(keyring)  # a missing key file fails here, before any work
        home = tempfile.mkdtemp(prefix="nestos-gpg-")  # mode 0700
        self._home: Optional[str] = home
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._result: Any = None
        self._gpg_error: Optional[BaseException] = None
        self._setup_error: Optional[BaseException] = None  # gpg refused a key file
        self._writer_error: Optional[BaseException] = None
        self._delivered = False  # the writer passed every byte and closed the data channel
        self._stop = threading.Event()
        self._done = False
        self._verdict: Optional[VerifiedSignature] = None
        self._proc: Optional[Popen[bytes]] = None
        self._gpg: Any = None
        # Every (sub)key fingerprint gpg accepted -> its primary key's listing: the trust set.
        self._keys: Dict[str, Dict[str, Any]] = {}
        try:
            sig_path = self._private_file("signature", signature)
            self._fifo = os.path.join(home, "data")
            # gpg's key import runs in a thread, beside the stream (or from finish()), never
            # before it: sqv starts at once on the same key files and gpg's verdict on the
            # keys is joined in finish(); the gpg backend imports, then opens the FIFO.
            if self.backend == "sqv":
                rings = [
                    self._private_file(f"key{i}", data) for i, data in enumerate(key_data)
                ] or [self._private_file("no-keys", b"")]
                self._start_sqv(home, sig_path, rings)
                self._gpg_thread = threading.Thread(
                    target=self._setup_keys, args=(home, key_data), name="gpg-keys", daemon=True
                )
            else:
                os.mkfifo(self._fifo, 0o600)
                self._gpg_thread = threading.Thread(
                    target=self._run_gpg,
                    args=(home, key_data, sig_path),
                    name="gpg-verify",
                    daemon=True,
                )
            if not (defer_key_import and self.backend == "sqv"):
                self._gpg_thread.start()
            self._writer = threading.Thread(target=self._write, name="verify-feeder", daemon=True)
            self._writer.start()
        except BaseException:
            self._kill_sqv()
            self._cleanup()
            raise

    @staticmethod
    def _read_keys(keyring: Keyring) -> List[bytes]:
        """Every key file's bytes. A file that is plainly not OpenPGP (neither an armored
        public key block nor binary packets, whose first byte has its high bit set) is
        refused here; gpg's import judges the rest."""
        datas = []
        for path in keyring.files:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise VerificationError(f"reading signing key {path}") from e
            if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data and not (
                data and data[0] & 0x80
            ):
                raise VerificationError(f"no OpenPGP public key found in {path}")
            datas.append(data)
        return datas

    def _private_file(self, name: str, data: bytes) -> str:
        assert self._home is not None
        path = os.path.join(self._home, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def _make_gpg(self, home: str) -> Any:
        try:
            # --no-autostart: public-key operations need no agent, so none may linger.
            return _gnupg().GPG(gnupghome=home, options=["--no-autostart"])
        except (OSError, ValueError) as e:
            raise ToolMissing("gpg cannot be run, needed to verify the image signature") from e

    def _setup_keys(self, home: str, key_data: List[bytes]) -> bool:
        """Import the keys into the temporary home (in a thread); False if gpg refused one."""
        try:
            self._gpg = self._make_gpg(home)
            self._import(key_data)
            return True
        except BaseException as e:  # re-raised by feed() / finish() in the caller's thread
            self._setup_error = e
            return False

    def _import(self, key_data: List[bytes]) -> None:
        for path, data in zip(self.keyring.files, key_data):
            result = self._gpg.import_keys(data)
            if not [f for f in (result.fingerprints or []) if f]:
                raise VerificationError(f"no OpenPGP public key found in {path}")
        # What gpg now holds, primary and subkey fingerprints alike (an import may name a
        # subkey; signatures name the primary).
        for key in self._gpg.list_keys():
            primary = str(key.get("fingerprint", "")).upper()
            if not primary:
                continue
            self._keys[primary] = key
            for sub in key.get("subkeys") or []:
                if len(sub) >= 3 and sub[2]:
                    self._keys[str(sub[2]).upper()] = key

    def _start_sqv(self, home: str, sig_path: str, rings: List[str]) -> None:
        out = open(os.path.join(home, "sqv.out"), "wb")  # closed below, once sqv has them
        err = open(os.path.join(home, "sqv.err"), "wb")
        argv = ["sqv"]
        for ring in rings:
            argv += ["--keyring", ring]
        try:
            self._proc = spawn(
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

    def _run_gpg(self, home: str, key_data: List[bytes], sig_path: str) -> None:
        # `gpg --verify SIG DATA` with DATA = our FIFO. (python-gnupg's data_filename= form would
        # copy the signature into a temp file outside our home; extra_args keeps it inside.)
        if not self._setup_keys(home, key_data):
            return  # the writer sees this thread gone and never opens the FIFO
        empty = io.BytesIO(b"")  # gpg's stdin: unused
        try:
            self._result = self._gpg.verify_file(empty, extra_args=[sig_path, self._fifo])
        except BaseException as e:
            self._gpg_error = e

    def _open_fifo(self) -> Optional[int]:
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
                if not self._gpg_thread.is_alive() or time.monotonic() > deadline:
                    return None
                time.sleep(0.002)
                continue
            os.set_blocking(fd, True)
            return fd

    def _data_fd(self) -> Optional[int]:
        """The descriptor the writer thread owns: a dup of sqv's stdin, or gpg's FIFO."""
        if self._proc is not None:
            stdin = self._proc.stdin
            assert stdin is not None
            try:
                return os.dup(stdin.fileno())
            finally:
                stdin.close()
        return self._open_fifo()

    def _write(self) -> None:
        fd: Optional[int] = None
        try:
            fd = self._data_fd()
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
        if self._setup_error is not None:
            raise self._setup_error
        if self._done:
            raise VerificationError("signature verifier fed after it finished")
        if (self._proc is not None and self._proc.poll() is not None) or (
            self._proc is None and self._gpg_thread.ident and not self._gpg_thread.is_alive()
        ):
            # The verifier quit before the end of the data (a bad signature or key file): say
            # why now, not after the whole image streamed.
            self.finish()
            raise BadSignature(f"{FAILURE}: verification ended before the end of the data")
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
        """End of data: wait for gpg and return the signer, or raise BadSignature."""
        if self._done:
            if self._verdict is None:
                raise BadSignature(f"{FAILURE}: verification was aborted")
            return self._verdict
        self._done = True
        try:
            self._queue.put(None)
            self._writer.join()
            if self._gpg_thread.ident is None:  # deferred import: now
                self._gpg_thread.start()
            self._gpg_thread.join()
            if self._setup_error is not None:
                self._kill_sqv()
                raise self._setup_error
            if self._proc is not None:
                self._proc.wait()
                self._verdict = self._judge_sqv()
            else:
                self._verdict = self._judge()
            return self._verdict
        finally:
            self._cleanup()

    def _judge_sqv(self) -> VerifiedSignature:
        assert self._proc is not None and self._home is not None
        if self._writer_error is not None:
            raise BadSignature(f"{FAILURE}: feeding data to sqv") from self._writer_error
        with open(os.path.join(self._home, "sqv.err"), "rb") as f:
            err = f.read().decode(errors="replace")
        with open(os.path.join(self._home, "sqv.out"), "rb") as f:
            out = f.read().decode(errors="replace")
        self.gpg_messages.extend(ln.rstrip() for ln in err.splitlines() if ln.strip())
        for line in self.gpg_messages:
            log.debug("sqv: %s", line)
        if self._proc.returncode != 0:
            raise BadSignature(f"{FAILURE}: {self._sqv_problem(err, self._proc.returncode)}")
        if not self._delivered:
            raise BadSignature(f"{FAILURE}: sqv did not read all of the data")
        signers = [ln.strip().upper() for ln in out.splitlines() if ln.strip()]
        if not signers:
            raise BadSignature(f"{FAILURE}: no valid signature")
        key = self._keys.get(signers[0])
        if key is None:
            raise BadSignature(f"{FAILURE}: signed by unknown key {signers[0]}")
        primary = str(key.get("fingerprint", "")).upper()
        key_id = str(key.get("keyid", "") or primary[-16:]).upper()
        # gpg's verdict on the key itself: refuse what it would call EXPKEYSIG / REVKEYSIG.
        validity = str(key.get("trust", ""))
        expires = str(key.get("expires", "") or "")
        if validity == "r":
            raise BadSignature(f"{FAILURE}: signing key 0x{key_id} has been revoked")
        if validity == "e" or (expires.isdigit() and int(expires) <= time.time()):
            raise BadSignature(f"{FAILURE}: signing key 0x{key_id} has expired")
        uids = key.get("uids") or [""]
        return VerifiedSignature(fingerprint=primary, key_id=key_id, username=str(uids[0]))

    @staticmethod
    def _sqv_problem(err: str, returncode: int) -> str:
        missing = re.search(r"Missing key ([0-9A-Fa-f]{16,40})", err)
        if missing:
            return f"signed by unknown key 0x{missing.group(1)[-16:].upper()}"
        if "manipulated" in err:
            return "bad signature"
        if re.search(r"Malformed|Reading \S*signature|No signature", err, re.IGNORECASE):
            return "no valid OpenPGP signature found"
        bad_key = re.search(r"Signing key on ([0-9A-Fa-f]{16,40}) is bad", err)
        who = f"signing key 0x{bad_key.group(1)[-16:].upper()}" if bad_key else "signing key"
        if "revoked" in err.lower():
            return f"{who} has been revoked"
        if "expired" in err.lower():
            return f"{who} or the signature has expired"
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        detail = lines[0] if lines else f"exit status {returncode}"
        return f"signature could not be checked ({detail})"

    def _judge(self) -> VerifiedSignature:
        if self._writer_error is not None:
            raise BadSignature(f"{FAILURE}: feeding data to gpg") from self._writer_error
        if self._gpg_error is not None:
            raise BadSignature(f"{FAILURE}: running gpg") from self._gpg_error
        result = self._result
        text = str(getattr(result, "stderr", "") or "")
        status: Dict[str, List[List[str]]] = {}
        for line in text.splitlines():
            if line.startswith("[GNUPG:] "):
                words = line[9:].split()
                if words:
                    status.setdefault(words[0], []).append(words[1:])
            elif line.strip():
                self.gpg_messages.append(line.rstrip())
        for line in self.gpg_messages:
            log.debug("gpg: %s", line)
        returncode = getattr(result, "returncode", 0)
        problem = self._problem(status)
        if problem is None and not self._delivered:
            problem = "gpg did not read all of the data"
        if problem is None and (returncode not in (0, None) or not result.valid):
            problem = f"gpg reported {result.status or 'failure'}"
        if problem is not None:
            raise BadSignature(f"{FAILURE}: {problem}")
        valid = status["VALIDSIG"][0]
        primary = (valid[9] if len(valid) >= 10 else valid[0]).upper()
        goodsig = status.get("GOODSIG", [[""]])[0]
        return VerifiedSignature(
            fingerprint=primary,
            key_id=goodsig[0] if goodsig else primary[-16:],
            username=" ".join(goodsig[1:]),
        )

    def _problem(self, status: Dict[str, List[List[str]]]) -> Optional[str]:
        if "NODATA" in status or ("NEWSIG" not in status and "VALIDSIG" not in status):
            return "no valid OpenPGP signature found"
        if "NO_PUBKEY" in status:
            return f"signed by unknown key 0x{status['NO_PUBKEY'][0][0]}"
        if "BADSIG" in status:
            return "bad signature"
        for key, what in (("EXPKEYSIG", "expired"), ("REVKEYSIG", "been revoked")):
            if key in status:
                return f"signing key 0x{status[key][0][0]} has {what}"
        if "EXPSIG" in status:
            return "signature has expired"
        if "ERRSIG" in status:
            return "signature could not be checked"
        if "VALIDSIG" not in status:
            return "no valid signature"
        for valid in status["VALIDSIG"]:
            primary = (valid[9] if len(valid) >= 10 else valid[0]).upper()
            if primary not in self._keys:
                return f"signed by unknown key {primary}"
        return None

    def abort(self) -> None:
        """Stop without a verdict (the download or install failed); removes the temp home."""
        if self._done:
            return
        self._done = True
        self._stop.set()
        try:
            self._queue.put(None)
            self._writer.join(timeout=30)
            if self._gpg_thread.ident is not None:
                self._gpg_thread.join(timeout=30)
            self._kill_sqv()
        finally:
            self._cleanup()

    def _kill_sqv(self) -> None:
        """sqv sees EOF once the writer closed its stdin and exits; never leave it behind."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except TimeoutExpired:
            proc.kill()
            proc.wait()

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


__all__ = [
    "FAILURE",
    "IgnitionHash",
    "Keyring",
    "SignatureVerifier",
    "VerifiedSignature",
    "verify_bytes",
]
