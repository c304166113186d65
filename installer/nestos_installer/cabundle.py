"""PEM CA certificate bundles (`--ignition-ca`): checked up front, and added to the default trust
(as Ignition's CAs are). Standard library only (`ssl` parses them, as the TLS stack that will trust
them does); imports `errors` and `untrusted` only."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Sequence, Union

from nestos_installer import untrusted
from nestos_installer.errors import ConfigError

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def check_ca_bundle(path: Union[str, Path]) -> bytes:
    """The bundle's bytes, once it is readable and holds at least one certificate, each of
    which parses; otherwise a ConfigError that says which certificate is wrong."""
    what = f"reading CA certificate bundle {path}"
    data = untrusted.read_file(path, "CA certificate bundle", limit=untrusted.SMALL_FILE_MAX)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ConfigError(
            f"{what}: no PEM certificate in it",
            hint="a CA bundle is one or more '-----BEGIN CERTIFICATE-----' blocks",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for n, block in enumerate(blocks, 1):
        try:
            context.load_verify_locations(cadata=block.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise ConfigError(
                f"{what}: certificate {n} of {len(blocks)} is not a valid X.509 certificate"
            ) from None
    return data


# What requests trusts without a bundle of ours: these variables, else the system's bundle.
_TRUST_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


def default_trust() -> bytes:
    """The CA bundle an HTTPS fetch trusts by default (empty if none is found)."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get(v) for v in _TRUST_VARIABLES]
    for path in [*candidates, paths.cafile, paths.openssl_cafile]:
        if path and os.path.isfile(path):
            return untrusted.read_file(path, "CA bundle", limit=untrusted.SMALL_FILE_MAX)
    return b""


def trust_bundle(paths: Sequence[Union[str, Path]]) -> bytes:
    """The default trust plus each checked bundle of `paths`: one PEM file's contents."""
    bundles = [check_ca_bundle(p) for p in paths]
    return b"\n".join([default_trust(), *bundles]) + b"\n"
