"""The gpgv backend x2nestos uses: a detached signature over a file on disk, checked by gpgv (or
gpg) through `run` with a throw-away keyring holding only our keys, judged by the shared policy.
Standard library, run and the policy only, Python 3.7+: the x2nestos zipapp bundles it.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path
from typing import List, Sequence

from nestos_installer import run as runner
from nestos_installer.errors import BadSignature, ConfigError, ToolMissing
from nestos_installer.signature.policy import GpgStatus, VerifiedSignature


def dearmor(data: bytes) -> bytes:
    """Binary packets of every ASCII-armored public key block in data (binary input as is)."""
    if b"-----BEGIN PGP" not in data:
        return data
    out = b""
    for block in re.findall(
        rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----",
        data,
        re.S,
    ):
        body = block.split(b"\n\n", 1)[-1] if b"\n\n" in block else block
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(b"=") and b":" not in ln]
        try:
            out += base64.b64decode(b"".join(lines), validate=True)
        except ValueError as e:
            raise ConfigError("decoding an ASCII-armored public key") from e
    return out


class GpgvVerifier:
    """Checks files against their detached signatures with gpgv (gpg where gpgv is missing).

    Its keyring holds nothing but `keys`, so every VALIDSIG names one of ours; the policy
    still refuses a revoked or expired signing key, which gpgv itself lets pass.
    """

    name = "gpgv"

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = list(keys)

    @staticmethod
    def _argv(home: str, keyring: Path) -> List[str]:
        if runner.have_tool("gpgv"):
            return ["gpgv", "--homedir", home, "--status-fd", "1", "--keyring", str(keyring)]
        if runner.have_tool("gpg"):
            return [
                "gpg",
                "--batch",
                "--homedir",
                home,
                "--no-default-keyring",
                "--keyring",
                str(keyring),
                "--status-fd",
                "1",
                "--verify",
            ]
        raise ToolMissing("gpgv not found, needed to verify artifact signatures")

    def verify(self, data_path: Path, sig_path: Path) -> VerifiedSignature:
        """The signer of sig_path over data_path, or BadSignature (`<file>: <why>`)."""
        if not self.keys:
            raise BadSignature(
                f"no trusted keys to verify {data_path.name} with",
                hint="pass --keyring FILE, or --insecure to skip verification",
            )
        with tempfile.TemporaryDirectory(prefix="x2nestos-gpg-") as tmp:
            keyring = Path(tmp) / "trusted.gpg"
            keyring.write_bytes(b"".join(dearmor(k) for k in self.keys))
            argv = self._argv(tmp, keyring)
            proc = runner.run(argv + [str(sig_path), str(data_path)], check=False, timeout=600)
        status = GpgStatus.parse(proc.stdout.decode(errors="replace"))
        problem = status.problem(None)
        if problem is None and proc.returncode != 0:
            problem = f"{argv[0]} exited with status {proc.returncode}"
        if problem is not None:
            raise status.file_refusal(data_path.name, problem)
        return status.signer()
