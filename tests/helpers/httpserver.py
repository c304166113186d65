"""A real threaded HTTP/1.1 server on 127.0.0.1 for tests: Range, ETag, and scripted faults.

Faults per path (`behave`): statuses served first, dropped or truncated bodies, stalls, flipped
bytes, ignored Range. Files are streamed with sendfile, so a 1 GiB artifact is cheap to serve.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20


@dataclass
class _Resource:
    data: Union[bytes, Path]
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        if isinstance(self.data, Path):
            return self.data.stat().st_size
        return len(self.data)


@dataclass
class _Behaviour:
    drop_after: Optional[int] = None
    drop_times: Optional[int] = None
    stall_after: Optional[int] = None
    stall_seconds: float = 0.0
    statuses: List[int] = field(default_factory=list)
    corrupt_at: Optional[int] = None
    ignore_range: bool = False
    truncate_at: Optional[int] = None
    faults_done: int = 0

    def take_fault(self) -> bool:
        """Does this request get the drop/stall/truncate fault? (counts it if so)."""
        if self.drop_after is None and self.stall_after is None and self.truncate_at is None:
            return False
        if self.drop_times is not None and self.faults_done >= self.drop_times:
            return False
        self.faults_done += 1
        return True


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: TestServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (resets, failed TLS handshakes) are part of the tests."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _simple(
        self, status: int, body: bytes = b"", headers: Sequence[Tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = unquote(urlsplit(self.path).path).lstrip("/")
        with owner._lock:
            owner.requests.append((path, self.headers.get("Range")))
            res = owner._lookup(path)
            beh = owner._behaviours.get(path)
            status = beh.statuses.pop(0) if beh and beh.statuses else None
            fault = bool(beh and not head and status is None and beh.take_fault())
        if res is None:
            self._simple(404, b"not found\n")
            return
        if status is not None:
            self._simple(status, f"scripted status {status}\n".encode())
            return
        size = res.size
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        fresh = if_range is None or if_range in (res.etag, res.last_modified)
        if rng and fresh and not (beh and beh.ignore_range):
            parsed = _parse_range(rng, size)
            if parsed is None:
                self._simple(416, b"", [("Content-Range", f"bytes */{size}")])
                return
            start, end = parsed
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start))
        self.send_header("ETag", res.etag)
        self.send_header("Last-Modified", res.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        try:
            if beh is None or (not fault and beh.corrupt_at is None):
                self._send_plain(res, path, start, end + 1 - start)
            else:
                self._send_faulty(res, path, beh, fault, start, end + 1)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _count(self, path: str, n: int) -> None:
        owner = self.server.owner
        with owner._lock:
            owner._sent[path] = owner._sent.get(path, 0) + n

    def _send_plain(self, res: _Resource, path: str, start: int, count: int) -> None:
        if isinstance(res.data, Path) and not isinstance(self.connection, ssl.SSLSocket):
            with res.data.open("rb") as f:
                sent = self.connection.sendfile(f, start, count)
            self._count(path, sent)
            if sent < count:
                self.close_connection = True
            return
        for chunk in _chunks(res.data, start, start + count, None):
            self.wfile.write(chunk)
            self._count(path, len(chunk))

    def _send_faulty(
        self, res: _Resource, path: str, beh: _Behaviour, fault: bool, start: int, stop: int
    ) -> None:
        cut = stop
        if fault and beh.drop_after is not None:
            cut = min(cut, start + beh.drop_after)
        if fault and beh.truncate_at is not None:
            cut = min(cut, max(start, beh.truncate_at))
        stall_at = start + beh.stall_after if fault and beh.stall_after is not None else None
        pos = start
        for chunk in _chunks(res.data, start, cut, stall_at):
            if beh.corrupt_at is not None and pos <= beh.corrupt_at < pos + len(chunk):
                b = bytearray(chunk)
                b[beh.corrupt_at - pos] ^= 0xFF
                chunk = bytes(b)
            self.wfile.write(chunk)
            self._count(path, len(chunk))
            pos += len(chunk)
            if stall_at is not None and pos == stall_at:
                time.sleep(beh.stall_seconds)
        if cut < stop:
            # Clean FIN after the partial body: the client sees a short read, then EOF.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _chunks(
    data: Union[bytes, Path], start: int, stop: int, split_at: Optional[int]
) -> Iterator[Union[bytes, memoryview]]:
    """Body bytes [start, stop) in CHUNK pieces, with a boundary exactly at `split_at`."""
    bounds = [start]
    pos = start
    while pos < stop:
        nxt = min(stop, pos + CHUNK)
        if split_at is not None and pos < split_at < nxt:
            nxt = split_at
        bounds.append(nxt)
        pos = nxt
    if isinstance(data, Path):
        with data.open("rb") as f:
            f.seek(start)
            for a, b in zip(bounds, bounds[1:]):
                yield f.read(b - a)
    else:
        view = memoryview(data)
        for a, b in zip(bounds, bounds[1:]):
            yield view[a:b]


def _parse_range(value: str, size: int) -> Optional[Tuple[int, int]]:
    """`bytes=A-`, `bytes=A-B`, `bytes=-N` (single range only) -> inclusive (start, end)."""
    value = value.strip()
    if not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a >= size or b < a:
        return None
    return a, min(b, size - 1)


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA (`ca`, PEM) and a server certificate + key for 127.0.0.1 it signed."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def generate(cls, directory: Path) -> TlsFiles:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nestos test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        files = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        files.ca.write_bytes(ca_cert.public_bytes(pem))
        files.cert.write_bytes(cert.public_bytes(pem))
        files.key.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return files


class TestServer:
    """`with TestServer() as srv: srv.add("a.raw.xz", data); url = srv.url("a.raw.xz")`."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Optional[Path] = None, *, tls: Optional[TlsFiles] = None) -> None:
        self.root = root
        self.scheme = "https" if tls else "http"
        self.requests: List[Tuple[str, Optional[str]]] = []
        self._lock = threading.Lock()
        self._resources: Dict[str, _Resource] = {}
        self._behaviours: Dict[str, _Behaviour] = {}
        self._sent: Dict[str, int] = {}
        self._version = 0
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: Union[bytes, Path]) -> str:
        """Serve `data` (bytes, or a file streamed from disk) at `path`; returns its URL."""
        path = path.lstrip("/")
        with self._lock:
            self._version += 1
            size = data.stat().st_size if isinstance(data, Path) else len(data)
            tag = hashlib.sha1(f"{path}:{self._version}:{size}".encode()).hexdigest()[:16]
            self._resources[path] = _Resource(
                data, f'"{tag}"', formatdate(time.time() - 60, usegmt=True)
            )
        return self.url(path)

    def behave(
        self,
        path: str,
        *,
        drop_after: Optional[int] = None,
        drop_times: Optional[int] = None,
        stall_after: Optional[int] = None,
        stall_seconds: float = 0,
        statuses: Sequence[int] = (),
        corrupt_at: Optional[int] = None,
        ignore_range: bool = False,
        truncate_at: Optional[int] = None,
    ) -> None:
        """Script faults for `path`. drop/stall/truncate hit the first `drop_times` GETs."""
        with self._lock:
            self._behaviours[path.lstrip("/")] = _Behaviour(
                drop_after=drop_after,
                drop_times=drop_times,
                stall_after=stall_after,
                stall_seconds=stall_seconds,
                statuses=list(statuses),
                corrupt_at=corrupt_at,
                ignore_range=ignore_range,
                truncate_at=truncate_at,
            )

    def bytes_sent(self, path: str) -> int:
        """Body bytes written for `path` over all requests so far."""
        with self._lock:
            return self._sent.get(path.lstrip("/"), 0)

    def requests_for(self, path: str) -> List[Optional[str]]:
        """The Range headers (or None) of every request for `path`, in order."""
        path = path.lstrip("/")
        with self._lock:
            return [r for p, r in self.requests if p == path]

    def _lookup(self, path: str) -> Optional[_Resource]:
        res = self._resources.get(path)
        if res is not None or self.root is None:
            return res
        parts = Path(path).parts
        if not parts or ".." in parts or path.startswith("/"):
            return None
        f = self.root / path
        if not f.is_file():
            return None
        st = f.stat()
        tag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        return _Resource(f, tag, formatdate(st.st_mtime, usegmt=True))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TestServer:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
