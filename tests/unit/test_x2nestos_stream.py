"""--stream: stream metadata and PXE artifacts served by a real HTTP server on 127.0.0.1,
fetched with urllib, checked against the stream's sha256 and each detached signature."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from fixtures.hostfacts.liveartifacts import GpgKey, build_pxe
from helpers.capabilities import require_tools
from nestos_installer.errors import (
    FetchError,
    HashMismatch,
    NestosError,
    OutputExists,
    SignatureMissing,
)
from x2nestos import artifacts


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    require_tools("gpg", "gpgv")
    k = GpgKey.generate(tmp_path_factory.mktemp("key"))
    yield k
    k.close()


@pytest.fixture
def served(tmp_path: Path, key: GpgKey) -> Iterator[tuple]:
    require_tools("cpio")
    d = tmp_path / "www"
    files = build_pxe(d / "pxe")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(d))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pxe = {}
    for kind, path in files.items():
        key.sign(path)
        pxe[kind] = {
            "location": f"{base}pxe/{path.name}",
            "signature": f"{base}pxe/{path.name}.sig",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    stream = {
        "stream": "test",
        "metadata": {"last-modified": "2026-01-01T00:00:00Z"},
        "architectures": {
            "x86_64": {"artifacts": {"metal": {"release": "1", "formats": {"pxe": pxe}}}}
        },
    }
    (d / "streams").mkdir()
    (d / "streams/test.json").write_text(json.dumps(stream))
    try:
        yield base + "streams/", key, d, tmp_path / "dl"
    finally:
        server.shutdown()
        server.server_close()


def test_stream_sizes_without_download(served: tuple) -> None:
    base, key, www, dest = served
    art = artifacts.from_stream("test", base, "x86_64", dest, [], insecure=False, download=False)
    assert art.parts["kernel"].size == (www / "pxe/vmlinuz").stat().st_size
    assert not dest.exists()


def test_stream_download_verifies(served: tuple) -> None:
    base, key, www, dest = served
    dest.mkdir()
    keys = [key.public.read_bytes()]
    art = artifacts.from_stream("test", base, "x86_64", dest, keys, insecure=False, download=True)
    assert (dest / "rootfs.img").read_bytes() == (www / "pxe/rootfs.img").read_bytes()
    assert len(art.verification) == 3 and art.arch == "x86_64"
    assert art.parts["initramfs"].path == dest / "initrd.img"


def test_stream_refusals(served: tuple) -> None:
    base, key, www, dest = served
    dest.mkdir()
    keys = [key.public.read_bytes()]
    with pytest.raises(NestosError, match="architecture.*aarch64"):
        artifacts.from_stream("test", base, "aarch64", dest, keys, insecure=False, download=True)
    with pytest.raises(FetchError, match="404"):
        artifacts.from_stream("nope", base, "x86_64", dest, keys, insecure=False, download=True)
    (www / "pxe/initrd.img").write_bytes(b"tampered")
    with pytest.raises(HashMismatch, match="initrd.img"):
        artifacts.from_stream("test", base, "x86_64", dest, keys, insecure=False, download=True)
    assert not (dest / "initrd.img").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".nestos-installer-temp")]
    kernel = (dest / "vmlinuz").read_bytes()
    (www / "pxe/vmlinuz").write_bytes(b"newer kernel")
    with pytest.raises(OutputExists, match="vmlinuz already exists; remove it or choose"):
        artifacts.from_stream("test", base, "x86_64", dest, keys, insecure=True, download=True)
    assert (dest / "vmlinuz").read_bytes() == kernel  # never clobbered
    doc = json.loads((www / "streams/test.json").read_text())
    for a in doc["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["pxe"].values():
        a.pop("signature")
        a.pop("sha256")
    (www / "streams/test.json").write_text(json.dumps(doc))
    fresh = dest.parent / "fresh"
    fresh.mkdir()
    with pytest.raises(SignatureMissing, match="no signature for kernel"):
        artifacts.from_stream("test", base, "x86_64", fresh, keys, insecure=False, download=True)


def test_convert_from_stream_build_only(served: tuple, tmp_path: Path) -> None:
    """Host checks first, then download + verify into the staging dir, then stage."""
    from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host
    from x2nestos.convert import convert
    from x2nestos.plan import ConvertConfig

    base, key, www, _ = served
    root = tmp_path / "root"
    build_host(root)
    ign = tmp_path / "u.ign"
    ign.write_text(LOGIN_IGN)
    cfg = ConvertConfig(
        root=root, stream="test", stream_base_url=base, keyrings=(key.public,), ignition_file=ign
    )
    said: list = []
    out = convert(cfg, say=said.append, confirm=None, stage_only=False, build_only=True)
    assert "downloading stream test" in said
    staged = root / "var/lib/x2nestos"
    assert (staged / "download/rootfs.img").read_bytes() == (www / "pxe/rootfs.img").read_bytes()
    assert out.kernel.read_bytes() == (www / "pxe/vmlinuz").read_bytes()
    assert out.initrd.read_bytes().startswith((www / "pxe/initrd.img").read_bytes())
    assert out.plan.artifacts is not None and len(out.plan.artifacts.verification) == 3
    # A second run downloads afresh: the staging download dir is ours, never clobbered.
    (staged / "download/rootfs.img").write_bytes(b"left by an earlier run")
    again = convert(cfg, say=said.append, confirm=None, stage_only=False, build_only=True)
    assert (staged / "download/rootfs.img").read_bytes() == (www / "pxe/rootfs.img").read_bytes()
    assert again.initrd.read_bytes() == out.initrd.read_bytes()


def test_one_loader_two_transports() -> None:
    """The installer's requests Fetcher and x2nestos' urllib one, behind the same load/select:
    same Stream, same typed errors."""
    from helpers.httpserver import TestServer
    from nestos_installer.errors import StreamError, UsageError
    from nestos_installer.fetch import Fetcher
    from nestos_installer.stream import load_stream, select_artifacts
    from x2nestos.urlfetch import UrlFetcher

    art = {"location": "http://m/k", "signature": "http://m/k.sig", "sha256": "ab" * 32}
    doc = {
        "stream": "s",
        "architectures": {
            "x86_64": {
                "artifacts": {"metal": {"release": "1", "formats": {"pxe": {"kernel": art}}}}
            }
        },
    }
    with TestServer() as srv, Fetcher() as requests_fetcher:
        srv.add("streams/s.json", json.dumps(doc).encode())
        srv.add("streams/bad.json", b"[]")
        base = srv.url("streams")
        loaded = [load_stream(t, "s", base) for t in (requests_fetcher, UrlFetcher())]
        assert loaded[0] == loaded[1] and loaded[0].stream == "s"
        kernel = select_artifacts(loaded[1], "x86_64", "metal", "pxe")["kernel"]
        assert (kernel.location, kernel.signature) == ("http://m/k", "http://m/k.sig")
        for transport in (requests_fetcher, UrlFetcher()):
            with pytest.raises(StreamError, match="bad.json: expected an object, found an array"):
                load_stream(transport, "bad", base)
            with pytest.raises(UsageError, match="invalid stream name"):
                load_stream(transport, "a/b", base)
            with pytest.raises(FetchError, match="stream metadata fetch failed: 404"):
                load_stream(transport, "gone", base)
            with pytest.raises(StreamError, match="no format 'iso'.*available: pxe"):
                select_artifacts(loaded[0], "x86_64", "metal", "iso")
        with pytest.raises(FetchError, match=r"s.json is too large: \d+ > 10 bytes"):
            UrlFetcher().get_bytes(srv.url("streams/s.json"), max_size=10)
