"""What a failed fetch tells the user: which host and port, what went wrong, in words; never
urllib3's nested reprs (`HTTPConnectionPool(...): Max retries exceeded ... NewConnectionError`)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from helpers.httpserver import TestServer, TlsFiles
from nestos_installer.errors import FetchError
from nestos_installer.fetch import Fetcher, FetchRetries
from nestos_installer.report import format_error

INTERNALS = ("HTTPConnectionPool", "Max retries", "NewConnectionError", "Errno", "urllib3", "0x")


def refusal(url: str, retries: int = 0, **kw: object) -> str:
    with Fetcher(FetchRetries(retries), backoff=0.01, connect_timeout=5, **kw) as f:  # type: ignore[arg-type]
        with pytest.raises(FetchError) as e:
            f.get_bytes(url, what="stream metadata")
    text = "\n".join(format_error(e.value))
    assert not any(word in text for word in INTERNALS), text
    assert e.value.__cause__ is None
    return str(e.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_names_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/s.json"
    with caplog.at_level(logging.WARNING, logger="nestos_installer"):
        msg = refusal(url, retries=1)
    reason = f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert msg == f"stream metadata fetch failed: {reason} ({url})"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("nestos_installer")]
    assert ours[0] == f"Error fetching '/s.json': {reason}"  # the retry says it too


def test_unknown_host() -> None:
    url = "http://nestos-test.invalid/s.json"
    assert refusal(url) == (
        f"stream metadata fetch failed: cannot resolve host name nestos-test.invalid ({url})"
    )


def test_untrusted_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    tls = TlsFiles.generate(tmp_path)
    with TestServer(tls=tls) as srv:
        url = srv.add("s.json", b"{}")
        port = url.split(":")[2].split("/")[0]
        msg = refusal(url)
    assert msg.startswith(
        f"stream metadata fetch failed: TLS error with 127.0.0.1:{port}: certificate verify failed:"
    )
    assert msg.endswith(f"({url})")
