"""`download` and `list-stream`: fetch stream metadata and verified artifacts into a directory.

Every artifact is checked against the stream's sha256 and its detached signature while it
streams into a temp file; it gets its final name (no clobber) only once both checks pass.
"""

from __future__ import annotations

import hashlib
import logging
import platform as host
import queue
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from nestos_installer import outputs
from nestos_installer.errors import (
    HashMismatch,
    NestosError,
    SignatureMissing,
    UsageError,
)
from nestos_installer.fetch import Fetcher, FetchRetries, check_url, url_name
from nestos_installer.pipeline.decompress import decompressed
from nestos_installer.pipeline.progress import Progress, ProgressMode
from nestos_installer.pipeline.readers import TeeReader, copy_stream
from nestos_installer.signature.policy import SIG_MISSING, Keyring
from nestos_installer.signature.verifier import SignatureVerifier
from nestos_installer.stream import load_stream, select_artifacts
from nestos_stream import DEFAULT_BASE_URL, DEFAULT_STREAM, Artifact

log = logging.getLogger(__name__)

_DECOMPRESS_SUFFIXES = (".xz", ".gz", ".zst")
_ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tar.zst")
_CHUNK = 1 << 20


def host_architecture() -> str:
    return host.machine() or "x86_64"


@dataclass(frozen=True)
class DownloadConfig:
    """What `download` was asked for; `image_url` overrides the stream selection."""

    directory: Path = Path(".")
    stream: str = DEFAULT_STREAM
    stream_base_url: str = DEFAULT_BASE_URL
    architecture: str = field(default_factory=host_architecture)
    platform: str = "metal"
    format: str = "raw.xz"
    image_url: Optional[str] = None
    decompress: bool = False
    insecure: bool = False
    keyrings: Tuple[Path, ...] = ()
    fetch_retries: FetchRetries = FetchRetries(0)
    progress: ProgressMode = ProgressMode.AUTO


# -- stream metadata ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRow:
    architecture: str
    platform: str
    format: str
    release: str


def list_stream(
    name: str = DEFAULT_STREAM,
    base_url: str = DEFAULT_BASE_URL,
    *,
    fetcher: Optional[Fetcher] = None,
) -> List[StreamRow]:
    """Every (architecture, platform, format) of a stream, sorted; fetched without retries."""
    with ExitStack() as stack:
        if fetcher is None:
            fetcher = stack.enter_context(Fetcher(FetchRetries(0)))
        stream = load_stream(fetcher, name, base_url)
    return [
        StreamRow(a, p, f, stream.architectures[a].artifacts[p].release)
        for a, p, f in stream.rows()
    ]


def format_table(rows: Sequence[StreamRow]) -> List[str]:
    """The list-stream table: two left-justified columns, two spaces apart, then the format."""
    table = [("Architecture", "Platform", "Format")]
    table += [(r.architecture, r.platform, r.format) for r in rows]
    w1 = max(len(t[0]) for t in table)
    w2 = max(len(t[1]) for t in table)
    return [f"{a.ljust(w1)}  {p.ljust(w2)}  {f}" for a, p, f in table]


# -- artifacts ----------------------------------------------------------------------------------


def _safe_name(url: str) -> str:
    name: str = url_name(url)
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or name.startswith(outputs.TEMP_PREFIX)
    ):
        raise UsageError(f"cannot derive a file name from URL '{url}'")
    return name


def _output_name(name: str, decompress: bool) -> str:
    """With --decompress, `x.raw.xz` -> `x.raw` (archives like .tar.xz stay as they are)."""
    if decompress and name.endswith(_DECOMPRESS_SUFFIXES) and not name.endswith(_ARCHIVE_SUFFIXES):
        return name.rsplit(".", 1)[0]
    return name


def _will_decompress(name: str, decompress: bool) -> bool:
    return _output_name(name, decompress) != name


class _Sha256Check:
    """sha256 of the bytes fed, compared with an expected digest (if the stream gave one)."""

    def __init__(self, expected: Optional[str], what: str) -> None:
        self.expected = expected.lower() if expected else None
        self.what = what
        self._h = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def check(self) -> None:
        found = self._h.hexdigest()
        if self.expected is not None and found != self.expected:
            raise HashMismatch(
                f"wrong sha256 for {self.what}: expected {self.expected}, found {found}"
            )


class _Pump:
    """Runs `fn` over chunks in a thread of its own, so hashing and writing overlap the
    network (socket reads, hashlib and file writes all release the GIL)."""

    def __init__(self, fn: Callable[[bytes], Any], name: str) -> None:
        self._fn = fn
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=8)
        self._error: Optional[BaseException] = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as e:  # re-raised in the producer's thread
                    self._error = e

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> None:
        """Wait until every chunk went through `fn`; raise what `fn` raised."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Pump:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


class _Job:
    """One artifact: fetch its signature, then stream it through sha256 + gpg into place."""

    def __init__(
        self, config: DownloadConfig, fetcher: Fetcher, keyring: Keyring, artifact: Artifact
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self.keyring = keyring
        self.artifact = artifact
        self.name = _safe_name(artifact.location)
        self.decompress = _will_decompress(self.name, config.decompress)
        self.path = config.directory / _output_name(self.name, config.decompress)
        self.sig_path = config.directory / (self.name + ".sig")
        self.signature: Optional[bytes] = None

    def fetch_signature(self) -> None:
        url = self.artifact.signature
        sig = self.fetcher.get_optional(url, what="signature") if url else None
        if sig is None and not self.config.insecure:
            raise SignatureMissing(
                f"{SIG_MISSING} for {self.name}",
                hint="pass --insecure to accept an unsigned image (a bad signature is never ok)",
            )
        if sig is None:
            log.warning("Signature not found for %s; continuing because of --insecure", self.name)
        self.signature = sig

    def run(self) -> Path:
        self.fetch_signature()
        if self.path.exists():
            self._check_existing()
            log.info("%s already exists and verifies; not fetching it again", self.path)
            return self.path
        self._fetch()
        if self.signature is not None and not self.decompress:
            self._write_sig()
        return self.path

    def _verifier(self, stack: ExitStack) -> Optional[SignatureVerifier]:
        if self.signature is None:
            return None
        return stack.enter_context(SignatureVerifier(self.signature, self.keyring))

    def _check_existing(self) -> None:
        """An existing output must check out, else we refuse to clobber it."""
        try:
            if self.decompress:
                expected = self.artifact.uncompressed_sha256
                if expected is None:
                    raise HashMismatch("no uncompressed-sha256 in the stream to check it against")
                check = _Sha256Check(expected, str(self.path))
                with self.path.open("rb") as f:
                    copy_stream(f, check.update)
                check.check()
                return
            if self.signature is None and self.artifact.sha256 is None:
                raise HashMismatch("no signature or sha256 to check it against")
            self._verify_file(self.path)
            if self.signature is not None:
                if not self.sig_path.exists() or self.sig_path.read_bytes() != self.signature:
                    self._write_sig()
        except NestosError as e:
            raise NestosError(
                f"{self.path} already exists and does not verify",
                hint="remove it to download it again",
            ) from e

    def _verify_file(self, path: Path) -> None:
        with ExitStack() as stack:
            verifier = self._verifier(stack)
            check = _Sha256Check(self.artifact.sha256, self.name)
            sinks: List[Callable[[bytes], Any]] = [check.update]
            if verifier is not None:
                sinks.append(verifier.feed)
            with path.open("rb") as f:
                copy_stream(TeeReader(f, sinks), lambda _b: None)
            check.check()
            if verifier is not None:
                verifier.finish()

    def _fetch(self) -> None:
        """Stream the artifact through sha256 (and gpg) into a temp file; it is published as
        `self.path` only once every check passed."""
        with ExitStack() as stack:
            out = stack.enter_context(outputs.new_file(self.path)).file
            remote = stack.enter_context(self.fetcher.open(self.artifact.location))
            progress = stack.enter_context(Progress(self.name, remote.length, self.config.progress))
            verifier = self._verifier(stack)
            check = _Sha256Check(self.artifact.sha256, self.name)
            hasher = stack.enter_context(_Pump(check.update, "sha256"))
            sinks: List[Callable[[bytes], Any]] = [hasher.put, progress.on_chunk]
            if verifier is not None:
                sinks.append(verifier.feed)
            tee = TeeReader(remote, sinks)
            unc = _Sha256Check(self.artifact.uncompressed_sha256, f"{self.name} (decompressed)")

            def write_decompressed(data: bytes) -> None:
                unc.update(data)
                out.write(data)

            writer = stack.enter_context(
                _Pump(write_decompressed if self.decompress else out.write, "writer")
            )
            if self.decompress:
                with decompressed(tee) as reader:
                    copy_stream(reader, writer.put, _CHUNK)
            else:
                copy_stream(tee, writer.put, _CHUNK)
            hasher.close()
            writer.close()
            check.check()
            if verifier is not None:
                verifier.finish()
            if self.decompress:
                unc.check()

    def _write_sig(self) -> None:
        """The verified signature next to the image; an older .sig there is replaced."""
        assert self.signature is not None
        outputs.write_file(self.sig_path, self.signature, replace=True)


def download(
    config: DownloadConfig,
    *,
    fetcher: Optional[Fetcher] = None,
    keyring: Optional[Keyring] = None,
) -> List[Path]:
    """Download (or re-verify) the selected artifacts; returns their final paths in order."""
    if not config.directory.is_dir():
        raise UsageError(f"output directory {config.directory} does not exist")
    with ExitStack() as stack:
        if fetcher is None:
            fetcher = stack.enter_context(Fetcher(config.fetch_retries))
        if keyring is None:
            keyring = Keyring.default(config.keyrings)
        if config.image_url is not None:
            check_url(config.image_url)
            artifacts = {"disk": Artifact.from_url(config.image_url)}
        else:
            stream = load_stream(fetcher, config.stream, config.stream_base_url)
            artifacts = select_artifacts(
                stream, config.architecture, config.platform, config.format
            )
        jobs = [_Job(config, fetcher, keyring, a) for _, a in sorted(artifacts.items())]
        return [job.run() for job in jobs]
