"""check_ca_bundle on real PEM files: a CA made by the tests, bundles, and broken inputs, each
refused in user terms (never a library's FAQ link)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.httpserver import TlsFiles
from nestos_installer.cabundle import check_ca_bundle
from nestos_installer.errors import ConfigError


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.generate(tmp_path_factory.mktemp("tls"))


def test_good_bundles(tls: TlsFiles, tmp_path: Path) -> None:
    assert check_ca_bundle(tls.ca) == tls.ca.read_bytes()
    bundle = tmp_path / "bundle.pem"
    text = "# Issuer: CN=Ünïcödé comment, as system bundles carry\n"
    bundle.write_bytes(text.encode() + tls.ca.read_bytes() + tls.cert.read_bytes())
    assert check_ca_bundle(str(bundle)) == bundle.read_bytes()


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        check_ca_bundle(path)
    text = f"{exc.value} {exc.value.__cause__ or ''} {exc.value.hint or ''}"
    assert "http" not in text and "_ssl.c" not in text, text
    return str(exc.value)


def test_refusals_in_user_terms(tls: TlsFiles, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"not a certificate\n")
    assert refusal(empty) == f"reading CA certificate bundle {empty}: no PEM certificate in it"
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert refusal(junk) == (
        f"reading CA certificate bundle {junk}: certificate 1 of 1 is not a valid X.509 certificate"
    )
    second = tmp_path / "second.pem"
    second.write_bytes(tls.ca.read_bytes() + junk.read_bytes())
    assert refusal(second).endswith("certificate 2 of 2 is not a valid X.509 certificate")
    missing = tmp_path / "missing.pem"
    assert refusal(missing) == f"reading CA certificate bundle {missing}"
    with pytest.raises(ConfigError) as exc:
        check_ca_bundle(missing)
    assert isinstance(exc.value.__cause__, FileNotFoundError)
