"""Fetcher against a real local HTTP server: retries, resume by Range, stalls, lies, limits."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Iterator

import pytest

from helpers.httpserver import TestServer, TlsFiles
from nestos_installer.errors import FetchError, UsageError
from nestos_installer.fetch import USER_AGENT, Fetcher, FetchRetries, url_name

SIZE = 3 << 20
MiB = 1 << 20


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture()
def server() -> Iterator[TestServer]:
    with TestServer() as srv:
        yield srv


def fetcher(retries: int = 3, **kw: float) -> Fetcher:
    return Fetcher(FetchRetries(retries), backoff=0.01, **kw)  # type: ignore[arg-type]


def read_small(f: object, n: int = 65536) -> bytes:
    parts = []
    while True:
        chunk = f.read(n)  # type: ignore[attr-defined]
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def test_fetch_retries_parse() -> None:
    assert FetchRetries.parse("0").retries == 0
    assert FetchRetries.parse("7").retries == 7
    assert FetchRetries.parse("infinite").retries is None
    assert str(FetchRetries.parse("infinite")) == "infinite"
    assert str(FetchRetries.parse("3")) == "3"
    for bad in ("-1", "x", "", "1.5"):
        with pytest.raises(UsageError):
            FetchRetries.parse(bad)


def test_serves_whole_file_and_metadata(server: TestServer, data: bytes) -> None:
    url = server.add("dir/img.raw.xz", data)
    with fetcher() as f, f.open(url) as r:
        assert r.length == SIZE
        assert r.name == "img.raw.xz"
        assert r.url == url
        assert hashlib.sha256(read_small(r)).digest() == hashlib.sha256(data).digest()
    assert server.requests_for("dir/img.raw.xz") == [None]
    assert USER_AGENT.startswith("nestos-installer/")


def test_open_at_offset(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    with fetcher() as f, f.open(url, offset=MiB + 5) as r:
        assert r.read() == data[MiB + 5 :]
    assert server.requests_for("a") == [f"bytes={MiB + 5}-"]


def test_drop_mid_body_resumes_with_range(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", drop_after=MiB + 12345, drop_times=1)
    with fetcher() as f, f.open(url) as r:
        got = read_small(r)
        assert r.resumes == 1
    assert got == data
    ranges = server.requests_for("a")
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].split("=")[1].rstrip("-"))  # type: ignore[union-attr]
    assert MiB + 12345 - resumed_at < MiB
    assert server.bytes_sent("a") - SIZE < MiB


def test_truncated_body_resumes(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", truncate_at=2 * MiB + 1, drop_times=1)
    with fetcher() as f, f.open(url) as r:
        assert r.read() == data
    assert server.requests_for("a")[1] == f"bytes={2 * MiB + 1}-"


def test_drop_without_retries_fails(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", drop_after=MiB, drop_times=1)
    with fetcher(0) as f, f.open(url) as r, pytest.raises(FetchError) as e:
        read_small(r)
    assert url in str(e.value)
    assert "fetch failed" in str(e.value)


def test_resume_budget_is_spent(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", drop_after=100_000)  # every response breaks
    with fetcher(2) as f, f.open(url) as r, pytest.raises(FetchError):
        read_small(r)
    assert len(server.requests_for("a")) == 3


def test_stall_times_out_and_resumes(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", stall_after=MiB + 7, stall_seconds=4, drop_times=1)
    start = time.monotonic()
    with fetcher(stall_timeout=0.5) as f, f.open(url) as r:
        assert read_small(r) == data
    assert time.monotonic() - start < 3.5
    ranges = server.requests_for("a")
    assert len(ranges) == 2 and ranges[1] is not None


def test_total_timeout(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", stall_after=MiB, stall_seconds=0.6, drop_times=1)
    with Fetcher(total_timeout=0.3) as f, f.open(url) as r, pytest.raises(FetchError) as e:
        read_small(r)
    assert "not complete after 0.3 s" in str(e.value)


def test_503_then_200(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", statuses=[503, 502])
    with fetcher(2) as f:
        assert f.get_bytes(url) == data
    assert len(server.requests_for("a")) == 3


def test_infinite_retries(server: TestServer, data: bytes) -> None:
    url = server.add("a", data[:5000])
    server.behave("a", statuses=[503, 429, 500, 504, 408])
    with Fetcher(FetchRetries.parse("infinite"), backoff=0.001) as f:
        assert f.get_bytes(url) == data[:5000]
    assert len(server.requests_for("a")) == 6


def test_other_status_fails_at_once(server: TestServer, data: bytes) -> None:
    url = server.add("a", data[:5000])
    server.behave("a", statuses=[403])
    with fetcher(5) as f, pytest.raises(FetchError) as e:
        f.get_bytes(url)
    assert "403 Forbidden" in str(e.value)
    assert len(server.requests_for("a")) == 1


def test_503_without_retries_fails(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", statuses=[503])
    with fetcher(0) as f, pytest.raises(FetchError) as e:
        f.get_bytes(url, what="image")
    assert str(e.value) == f"image fetch failed: 503 Service Unavailable ({url})"


def test_backoff_doubles(server: TestServer, data: bytes) -> None:
    url = server.add("a", data[:1000])
    server.behave("a", statuses=[503, 503, 503])
    start = time.monotonic()
    with Fetcher(FetchRetries(3), backoff=0.2) as f:
        assert f.get_bytes(url) == data[:1000]
    assert time.monotonic() - start >= 0.2 + 0.4 + 0.8 - 0.05


def test_server_ignoring_range(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", drop_after=MiB + 99, drop_times=2, ignore_range=True)
    with fetcher() as f, f.open(url) as r:
        assert read_small(r) == data
        assert r.resumes == 2


def test_file_changed_between_resumes(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    server.behave("a", drop_after=MiB, drop_times=1)
    with fetcher() as f, f.open(url) as r:
        first = r.read(MiB // 2)
        server.add("a", data[::-1])  # new ETag: the resume's If-Range no longer matches
        with pytest.raises(FetchError) as e:
            read_small(r)
    assert first == data[: MiB // 2]
    assert "changed on the server" in str(e.value)


def test_corrupt_bytes_are_delivered_as_served(server: TestServer, data: bytes) -> None:
    """The fetcher is a transport: integrity is the verifier's job; it must not hide flips."""
    url = server.add("a", data)
    server.behave("a", corrupt_at=12345)
    with fetcher() as f:
        got = f.get_bytes(url)
    assert got != data and got[12345] == data[12345] ^ 0xFF


def test_not_found(server: TestServer) -> None:
    with fetcher() as f:
        assert f.get_optional(server.url("x.sig")) is None
        with pytest.raises(FetchError) as e:
            f.get_bytes(server.url("x"))
    assert "404 Not Found" in str(e.value)


def test_max_size(server: TestServer, data: bytes) -> None:
    url = server.add("a", data)
    with fetcher() as f, pytest.raises(FetchError) as e:
        f.get_bytes(url, max_size=1000)
    assert "too large" in str(e.value)


def test_only_http(server: TestServer) -> None:
    with fetcher() as f:
        for url in ("ftp://example.com/x", "file:///etc/passwd", "x"):
            with pytest.raises(UsageError) as e:
                f.open(url)
            assert str(e.value) == f"unknown protocol for URL '{url}'"


def test_connection_refused() -> None:
    with TestServer() as srv:
        url = srv.url("a")
    with fetcher(0, connect_timeout=2) as f, pytest.raises(FetchError) as e:
        f.get_bytes(url)
    assert "connection refused" in str(e.value)


def test_url_name() -> None:
    assert url_name("http://h/a/b/nestos%2Bx.raw.xz?x=1#f") == "nestos+x.raw.xz"
    assert url_name("http://h/") == ""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.generate(tmp_path_factory.mktemp("tls"))


@pytest.fixture()
def no_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_https_needs_a_trusted_ca(tls: TlsFiles, data: bytes, no_ca_env: None) -> None:
    with TestServer(tls=tls) as srv:
        url = srv.add("a", data)
        assert url.startswith("https://")
        with fetcher(0) as f, pytest.raises(FetchError) as e:
            f.get_bytes(url)
        assert "TLS error" in str(e.value)
        with Fetcher(ca_bundle=tls.ca) as f:
            assert f.get_bytes(url) == data
        with Fetcher(verify_tls=False) as f:
            assert f.get_bytes(url) == data


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_ca_bundle_from_environment(
    tls: TlsFiles, data: bytes, no_ca_env: None, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, str(tls.ca))
    with TestServer(tls=tls) as srv:
        url = srv.add("a", data)
        srv.behave("a", drop_after=MiB, drop_times=1)
        with fetcher(1) as f:
            assert f.get_bytes(url) == data


def test_proxy_from_environment(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """http_proxy is honoured: the request goes to the proxy with the absolute URL."""
    with TestServer() as proxy:
        target = "http://nestos.invalid/streams/x.json"
        proxy.add("streams/x.json", data[:100])  # nestos.invalid cannot resolve: proxy only
        monkeypatch.setenv("http_proxy", proxy.url(""))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with fetcher(0) as f:
            assert f.get_bytes(target) == data[:100]
        assert proxy.requests_for("streams/x.json") == [None]
