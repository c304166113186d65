"""PEM CA certificate bundles (`--ignition-ca`): checked up front, before anything uses them.

Standard library only (`ssl` parses them, as the TLS stack that will trust them does); imports
`errors` only.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Union

from nestos_installer.errors import ConfigError

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def check_ca_bundle(path: Union[str, Path]) -> bytes:
    """The bundle's bytes, once it is readable and holds at least one certificate, each of
    which parses; otherwise a ConfigError that says which certificate is wrong."""
    what = f"reading CA certificate bundle {path}"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(what) from e
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
