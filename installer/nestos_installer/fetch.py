"""HTTP(S) fetching: retries with backoff, stall timeouts, and bodies that resume with Range.

The only module that imports requests. Imports nothing from the project but errors and the
version string; never prints (retries are logged through `logging`).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Type, Union
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nestos_installer import __version__
from nestos_installer.errors import FetchError, UsageError

log = logging.getLogger(__name__)

USER_AGENT = f"nestos-installer/{__version__}"
CHUNK = 1 << 20
"""Body read size: a dropped connection loses at most one chunk, so resume re-fetches < 1 MiB."""
BACKOFF_START = 1.0
BACKOFF_MAX = 600.0
TOTAL_TIMEOUT = 4 * 3600.0
"""A single file may take this long in all (coreos-installer's completion timeout)."""
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
GONE_STATUSES = (404, 410)

_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


@dataclass(frozen=True)
class FetchRetries:
    """How many times a failed request or a broken body may be retried (None = forever)."""

    retries: Optional[int] = 0

    @classmethod
    def parse(cls, text: str) -> FetchRetries:
        value = text.strip().lower()
        if value == "infinite":
            return cls(None)
        if value.isdigit():
            return cls(int(value))
        raise UsageError(
            f"invalid fetch retries '{text}'", hint="use a number of retries or 'infinite'"
        )

    def allows(self, used: int) -> bool:
        """May we retry once more after `used` retries?"""
        return self.retries is None or used < self.retries

    def __str__(self) -> str:
        return "infinite" if self.retries is None else str(self.retries)


class _Retry(Retry):
    """urllib3 Retry whose backoff is 1 s (or the Fetcher's start), doubling, capped."""

    def get_backoff_time(self) -> float:
        consecutive = 0
        for item in reversed(self.history):
            if item.redirect_location is not None:
                break
            consecutive += 1
        if consecutive == 0:
            return 0.0
        factor: float = self.backoff_factor
        delay = min(factor * 2.0 ** (consecutive - 1), BACKOFF_MAX)
        last = self.history[-1]
        why = f"HTTP {last.status}" if last.status else _short(last.error, last.url or "")
        log.warning("Error fetching '%s': %s", last.url, why)
        log.warning("Sleeping %.3gs and retrying...", delay)
        return delay


def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def check_url(url: str) -> str:
    """Refuse anything but http/https, with the wording of coreos-installer."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"unknown protocol for URL '{url}'")
    return url


def url_name(url: str) -> str:
    """Last path segment of a URL (query and fragment dropped, percent-decoding applied)."""
    path = unquote(urlsplit(url).path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name


def _status_text(resp: requests.Response) -> str:
    reason = resp.reason or ""
    return f"{resp.status_code} {reason}".strip()


class Fetcher:
    """One HTTP client per operation: session, retry policy, timeouts, TLS settings."""

    def __init__(
        self,
        retries: FetchRetries = FetchRetries(0),
        *,
        ca_bundle: Optional[Path] = None,
        verify_tls: bool = True,
        connect_timeout: float = 30,
        stall_timeout: float = 60,
        backoff: float = BACKOFF_START,
        chunk_size: int = CHUNK,
        total_timeout: Optional[float] = TOTAL_TIMEOUT,
    ) -> None:
        self.retries = retries
        self.total_timeout = total_timeout
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self.backoff = backoff
        self.chunk_size = chunk_size
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Byte offsets must be offsets into the file as stored: no transparent gzip.
        self.session.headers["Accept-Encoding"] = "identity"
        verify: Union[bool, str] = verify_tls
        if not verify_tls:
            log.warning("TLS certificate verification is disabled")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if verify_tls and ca_bundle is not None:
            verify = str(ca_bundle)
        elif verify_tls and not _env("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            # requests honours REQUESTS_CA_BUNDLE itself; SSL_CERT_FILE (OpenSSL's variable,
            # also used by curl) would be ignored in favour of certifi without this.
            verify = _env("SSL_CERT_FILE") or True
        self.verify = verify
        n = retries.retries
        options: Dict[str, Any] = dict(
            total=n,
            connect=n,
            read=n,
            status=n,
            other=n,
            redirect=10,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}),
            backoff_factor=backoff,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        try:
            policy = _Retry(**options)
        except TypeError:  # urllib3 < 1.26.x has no `other`
            del options["other"]
            policy = _Retry(**options)
        adapter = HTTPAdapter(max_retries=policy)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def request(
        self, url: str, *, headers: Optional[Dict[str, str]] = None, what: str = "image"
    ) -> requests.Response:
        """GET with retries for transport errors and retryable statuses; body not read yet."""
        check_url(url)
        try:
            resp = self.session.get(
                url,
                headers=headers or {},
                stream=True,
                timeout=(self.connect_timeout, self.stall_timeout),
                verify=self.verify,
                allow_redirects=True,
            )
        except requests.exceptions.RetryError:
            raise FetchError(f"{what} fetch failed: too many retries ({url})") from None
        except requests.exceptions.RequestException as e:
            # the reason says it all; urllib3's nested reprs would only add Python internals
            raise FetchError(f"{what} fetch failed: {_short(e, url)} ({url})") from None
        return resp

    def open(self, url: str, *, offset: int = 0, what: str = "image") -> RemoteFile:
        """Start a GET of `url` (from byte `offset`); the body is read through the RemoteFile."""
        return RemoteFile(self, url, offset=offset, what=what)

    def get_bytes(self, url: str, *, max_size: int = 64 << 20, what: str = "file") -> bytes:
        """A whole small file in memory; larger than `max_size` is an error."""
        return self._get(url, max_size=max_size, what=what, missing_ok=False)

    def _get(self, url: str, *, max_size: int, what: str, missing_ok: bool) -> bytes:
        with RemoteFile(self, url, what=what, missing_ok=missing_ok) as f:
            if f.length is not None and f.length > max_size:
                raise FetchError(f"{what} at {url} is too large: {f.length} > {max_size} bytes")
            parts: List[bytes] = []
            size = 0
            while True:
                data = f.read(self.chunk_size)
                if not data:
                    break
                size += len(data)
                if size > max_size:
                    raise FetchError(f"{what} at {url} is larger than {max_size} bytes")
                parts.append(data)
        return b"".join(parts)

    def get_optional(
        self, url: str, *, max_size: int = 1 << 20, what: str = "signature"
    ) -> Optional[bytes]:
        """Like get_bytes, but None when the server says 404/410 (e.g. a missing `.sig`)."""
        try:
            return self._get(url, max_size=max_size, what=what, missing_ok=True)
        except _Gone:
            return None


class _Gone(Exception):
    """404/410 where the caller allows it: get_optional turns this into None."""


def _short(e: Optional[BaseException], url: str) -> str:
    """A one-line reason for a transport error in the user's terms (which host, what happened),
    without urllib3's nested reprs."""
    causes = list(_causes(e))
    host, hostport = _host(url, causes)
    for c in causes:
        if isinstance(c, ssl.SSLCertVerificationError):
            why = c.verify_message or "certificate not trusted"
            return f"TLS error with {hostport}: certificate verify failed: {why}"
    for c in causes:
        if isinstance(c, ssl.SSLError):
            return f"TLS error with {hostport}: {c.reason or c.strerror or 'handshake failed'}"
        if isinstance(c, socket.gaierror):
            return f"cannot resolve host name {host}"
        if isinstance(c, ConnectionRefusedError):
            return f"cannot connect to {hostport}: connection refused"
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return f"cannot connect to {hostport}: connection timed out"
    if isinstance(e, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return "stalled (no data before the timeout)"
    if isinstance(
        e,
        (
            urllib3.exceptions.ProtocolError,
            requests.exceptions.ChunkedEncodingError,
            ConnectionResetError,
            BrokenPipeError,
        ),
    ):
        return "connection broken"
    errors = [str(c.strerror) for c in causes if isinstance(c, OSError) and c.strerror]
    if errors:
        return f"cannot connect to {hostport}: {errors[-1].lower()}"
    if isinstance(e, requests.exceptions.ConnectionError):
        return f"cannot connect to {hostport}: connection failed"
    return "request failed"


def _causes(e: Optional[BaseException]) -> Iterator[BaseException]:
    """`e` and what it wraps (urllib3's `reason`, exception args, causes), outermost first."""
    seen: Set[int] = set()
    todo = [e]
    while todo and len(seen) < 20:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        nested = [getattr(cur, "reason", None), *getattr(cur, "args", ())]
        todo += [x for x in nested if isinstance(x, BaseException)]
        todo += [cur.__cause__, cur.__context__]


def _host(url: str, causes: List[BaseException]) -> Tuple[str, str]:
    """(host, host:port) of a URL, or of the connection urllib3 names (its retry log has only a
    path), for messages."""
    parts = urlsplit(url)
    host: Optional[str] = parts.hostname
    try:
        port = parts.port
    except ValueError:
        port = None
    if host is None:
        conns = [getattr(c, "conn", None) or getattr(c, "pool", None) for c in causes]
        conn = next((c for c in conns if getattr(c, "host", None)), None)
        host, port = (str(conn.host), getattr(conn, "port", None)) if conn else ("?", None)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RemoteFile:
    """The body of one GET as a reader that survives drops and stalls by resuming with Range.

    The consumer sees one contiguous, byte-identical stream. Each resume spends one retry of
    the Fetcher's budget; with no retries left, a broken body is a FetchError.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        url: str,
        *,
        offset: int = 0,
        what: str = "image",
        missing_ok: bool = False,
    ) -> None:
        self._fetcher = fetcher
        self._missing_ok = missing_ok
        limit = fetcher.total_timeout
        self._deadline = None if limit is None else time.monotonic() + limit
        self._what = what
        self.requested_url = url
        self._start = offset
        self._done = offset  # absolute offset of the next byte the consumer gets
        self._resumes = 0
        self._failures = 0  # consecutive resumes that delivered nothing (for backoff)
        self._closed = False
        self._resp: Optional[requests.Response] = None
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = fetcher.request(url, headers=headers, what=what)
        self._check_status(resp, url)
        self.url: str = resp.url or url
        self.name: str = url_name(self.url)
        self._validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        self._etag = resp.headers.get("ETag")
        self.length: Optional[int] = None
        if resp.status_code == 206:
            total = _content_range(resp.headers.get("Content-Range", ""))
            if total is None or total[0] != offset:
                resp.close()
                raise FetchError(f"{what} fetch failed: bad Content-Range ({url})")
            self.length = total[1]
        else:
            self.length = _int_header(resp, "Content-Length")
        self._resp = resp
        if resp.status_code == 200 and offset:
            self._skip(resp, offset)

    # -- reader API -------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts: List[bytes] = []
            while True:
                data = self.read(self._fetcher.chunk_size)
                if not data:
                    return b"".join(parts)
                parts.append(data)
        if n == 0 or self._closed:
            return b""
        want = min(n, self._fetcher.chunk_size)
        while True:
            if self.length is not None and self._done >= self.length:
                return b""
            if self.length is not None:
                want = min(want, self.length - self._done)
            assert self._resp is not None
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise FetchError(
                    f"{self._what} fetch failed: not complete after "
                    f"{self._fetcher.total_timeout:g} s ({self.url})"
                )
            try:
                data = self._resp.raw.read(want, decode_content=False)
            except _TRANSPORT_ERRORS as e:
                self._resume(e)
                continue
            if not data:
                if self.length is not None and self._done < self.length:
                    self._resume(None)
                    continue
                return b""
            self._done += len(data)
            self._failures = 0
            return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    @property
    def position(self) -> int:
        """Absolute offset of the next byte (`offset` + bytes delivered)."""
        return self._done

    @property
    def resumes(self) -> int:
        return self._resumes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._resp is not None:
            self._resp.close()

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _check_status(self, resp: requests.Response, url: str) -> None:
        if resp.status_code in (200, 206):
            return
        resp.close()
        msg = f"{self._what} fetch failed: {_status_text(resp)} ({url})"
        if resp.status_code in GONE_STATUSES and self._missing_ok:
            raise _Gone(msg)
        raise FetchError(msg)

    def _resume(self, cause: Optional[BaseException]) -> None:
        """Replace the broken response with `Range: bytes=<done>-`, or raise FetchError."""
        assert self._resp is not None
        self._resp.close()
        reason = _short(cause, self.url) if cause is not None else "connection closed early"
        where = f"after {self._done} of {self.length if self.length is not None else '?'} bytes"
        if not self._fetcher.retries.allows(self._resumes):
            raise FetchError(f"{self._what} fetch failed: {reason} {where} ({self.url})")
        self._resumes += 1
        self._failures += 1
        delay = min(self._fetcher.backoff * 2.0 ** (self._failures - 1), BACKOFF_MAX)
        log.warning(
            "Error fetching '%s': %s %s; sleeping %.3gs and resuming...",
            self.url,
            reason,
            where,
            delay,
        )
        time.sleep(delay)
        headers = {"Range": f"bytes={self._done}-"}
        if self._validator:
            headers["If-Range"] = self._validator
        try:
            resp = self._fetcher.request(self.url, headers=headers, what=self._what)
        except FetchError:
            if self._fetcher.retries.allows(self._resumes):
                self._resp = _Dead()  # type: ignore[assignment]
                return
            raise
        if resp.status_code == 206:
            rng = _content_range(resp.headers.get("Content-Range", ""))
            if (
                rng is None
                or rng[0] != self._done
                or (self.length is not None and rng[1] != self.length)
            ):
                resp.close()
                raise FetchError(
                    f"{self._what} fetch failed: server answered the resume with a wrong "
                    f"Content-Range '{resp.headers.get('Content-Range')}' ({self.url})"
                )
            self._resp = resp
            return
        if resp.status_code == 200:
            etag = resp.headers.get("ETag")
            if self._etag and etag and etag != self._etag:
                resp.close()
                raise FetchError(f"{self._what} changed on the server while fetching ({self.url})")
            self._resp = resp
            log.info("server ignored Range; re-reading %d bytes already received", self._done)
            self._skip(resp, self._done)
            return
        self._check_status(resp, self.url)

    def _skip(self, resp: requests.Response, count: int) -> None:
        """Read and discard `count` bytes of a 200 answer (the server ignored our Range)."""
        left = count
        while left > 0:
            try:
                data = resp.raw.read(min(left, self._fetcher.chunk_size), decode_content=False)
            except _TRANSPORT_ERRORS:
                # Broken again while skipping: the next read() resumes (and spends a retry).
                resp.close()
                self._resp = _Dead()  # type: ignore[assignment]
                return
            if not data:
                resp.close()
                raise FetchError(
                    f"{self._what} fetch failed: body ended before byte {count} ({self.url})"
                )
            left -= len(data)


class _Dead:
    """Stands in for a response whose resume request failed: reading it triggers a resume."""

    class _Raw:
        def read(self, n: int, decode_content: bool = False) -> bytes:
            raise ConnectionError("resume request failed")

    raw = _Raw()

    def close(self) -> None:
        pass


def _int_header(resp: requests.Response, name: str) -> Optional[int]:
    value = resp.headers.get(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _content_range(value: str) -> Optional[Tuple[int, int]]:
    """`bytes 100-199/1000` -> (100, 1000); None if malformed or of unknown total."""
    value = value.strip()
    if not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/", 1)
        first, _last = span.split("-", 1)
        return int(first), int(total)
    except ValueError:
        return None
