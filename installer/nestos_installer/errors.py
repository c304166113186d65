"""Typed errors of nestos-installer, each with an exit code and an optional hint.

Leaf module: imports nothing from the project. Library code raises these (wrapping causes with
`raise X("what we were doing") from e`); only the CLI prints them and exits.
"""

from __future__ import annotations

from typing import Optional, Sequence


class NestosError(Exception):
    """Base of every error the CLI reports as one `Error: ...` line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(NestosError):
    """Bad combination or value of command-line options or config-file keys."""

    exit_code = 2


class InputRefused(NestosError):
    """Well-formed options, but the input does not allow what was asked: an image already
    customized, kargs or an initramfs too large for its area, a feature the image lacks, an
    Ignition config that does not parse. A run-time failure (exit 1), not a usage error."""


class ConfigError(InputRefused):
    """A config file (YAML, Ignition, installer config, CA bundle) whose content cannot be used:
    a run-time failure (exit 1), like upstream's, not a usage error."""


class VerificationError(NestosError):
    """Something we were asked to trust did not check out."""


class SignatureMissing(VerificationError):
    """No detached signature was found for the image (allowed only with --insecure)."""


class BadSignature(VerificationError):
    """A signature is present but does not verify against a trusted key."""


class HashMismatch(VerificationError):
    """A digest did not match the expected one."""


class FetchError(NestosError):
    """A network fetch failed after the allowed retries."""


class ImageFormatError(NestosError):
    """An image, archive or ISO is malformed or hostile (bad offsets, trailing data...)."""


class TargetError(NestosError):
    """The destination device cannot be used."""


class TargetBusy(TargetError):
    """The destination device is in use; the message names who holds it."""

    def __init__(self, message: str, holders: Sequence[str] = (), *, hint: Optional[str] = None):
        super().__init__(message, hint=hint)
        self.holders = list(holders)


class ToolMissing(NestosError):
    """An external program we need is not installed."""


class CommandFailed(NestosError):
    """An external program exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = f": {stderr_tail.strip()}" if stderr_tail.strip() else ""
        super().__init__(f"{self.argv[0]} exited with status {returncode}{tail}")


class InstallFailed(NestosError):
    """The install started writing and then failed; the cause chain says why."""


class OutputExists(NestosError):
    """An output file would replace an existing one; outputs never clobber."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} already exists; remove it or choose another name")
        self.path = path


class NotFound(NestosError):
    """A file or record that was looked up does not exist (used for fallbacks)."""


class StreamError(NestosError):
    """Stream metadata that cannot be fetched or parsed, or has no such artifact."""
