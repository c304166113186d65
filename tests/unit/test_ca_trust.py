"""--ignition-ca adds to the trust an HTTPS fetch has anyway (as Ignition's own CAs do): an
install that trusts a private CA still fetches from servers the default bundle trusts. Real TLS
servers, real CAs made by the test."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from helpers.httpserver import TestServer, TlsFiles
from nestos_installer.cabundle import trust_bundle
from nestos_installer.install import InstallConfig, _make_fetcher


def test_ignition_ca_adds_to_the_default_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "private").mkdir()
    public = TlsFiles.generate(tmp_path / "public")  # stands for the system's bundle
    private = TlsFiles.generate(tmp_path / "private")  # the user's --ignition-ca
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(public.ca))
    bundle = trust_bundle([private.ca])
    assert public.ca.read_bytes() in bundle and private.ca.read_bytes() in bundle
    cfg = InstallConfig(dest_device="/dev/null", ignition_ca=(private.ca,))
    with TestServer(tls=public) as mirror, TestServer(tls=private) as ign, ExitStack() as stack:
        image, config = mirror.add("image", b"image"), ign.add("c.ign", b"{}")
        fetcher = _make_fetcher(cfg, stack)
        stack.callback(fetcher.close)
        assert fetcher.get_bytes(image) == b"image"
        assert fetcher.get_bytes(config) == b"{}"
