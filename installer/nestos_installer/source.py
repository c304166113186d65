"""Where an image comes from: a local file, a URL, or a stream's artifact. Each becomes an
ImageSource: a raw byte reader plus its detached signature, length and expected digests.

Imports fetch, run, errors, stream and nestos_stream; never a verb (download, install).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nestos_installer import run
from nestos_installer.compression import Compression
from nestos_installer.errors import FetchError, NestosError, SignatureMissing
from nestos_installer.fetch import Fetcher, check_url
from nestos_installer.signature.policy import SIG_MISSING
from nestos_installer.stream import load_stream, select_artifacts
from nestos_stream import signature_url

MISSING_HINT = (
    "put the detached .sig next to the image, or pass --insecure to install an unsigned image"
)


@dataclass
class ImageSource:
    reader: Any  # read(n) -> bytes over the raw (usually compressed) bytes
    description: str
    name: str
    length: Optional[int]
    signature: Optional[bytes]
    sha256: Optional[str] = None  # of the raw bytes, when the stream says so
    image_size: Optional[int] = None  # decompressed size, when it can be known up front

    def close(self) -> None:
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class SourceSpec:
    image_file: Optional[Path] = None
    image_url: Optional[str] = None
    stream: Optional[str] = None
    stream_base_url: Optional[str] = None
    architecture: str = "x86_64"
    platform: str = "metal"
    format: str = "raw.xz"


def xz_uncompressed_size(path: Path) -> Optional[int]:
    """The uncompressed size recorded in a local .xz file's index (None if unknown)."""
    if not run.have_tool("xz"):
        return None
    proc = run.run(["xz", "--robot", "--list", path], check=False)
    for line in proc.stdout.decode(errors="replace").splitlines():
        fields = line.split("\t")
        if fields[0] == "totals" and len(fields) > 4:
            try:
                return int(fields[4])
            except ValueError:
                return None
    return None


def local_image_size(path: Path) -> Optional[int]:
    with open(path, "rb") as f:
        head = f.read(8)
    kind = Compression.sniff(head)
    if kind is Compression.NONE:
        return os.path.getsize(path)
    if kind is Compression.XZ:
        return xz_uncompressed_size(path)
    return None


def open_file(path: Path, insecure: bool, say: Any) -> ImageSource:
    sig_path = Path(f"{path}.sig")
    say(f"Copying image from {path}")
    say(f"Reading signature from {sig_path}")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by ImageSource.close
    except OSError as e:
        raise NestosError(f"opening image file {path}") from e
    signature: Optional[bytes]
    try:
        signature = sig_path.read_bytes()
    except FileNotFoundError:
        signature = None
    except OSError as e:
        say(f"Couldn't read signature file: {e}")
        signature = None
    src = ImageSource(
        f,
        f"file {path}",
        path.name,
        os.fstat(f.fileno()).st_size,
        signature,
        image_size=local_image_size(path),
    )
    return require_signature(src, insecure, say)


def open_url(
    fetcher: Fetcher,
    url: str,
    insecure: bool,
    say: Any,
    sig_url: Optional[str] = None,
    sha256: Optional[str] = None,
    description: Optional[str] = None,
) -> ImageSource:
    check_url(url)
    sig_url = sig_url or signature_url(url)
    say(description or f"Downloading image from {url}\nDownloading signature from {sig_url}")
    try:
        signature = fetcher.get_optional(sig_url, what="signature")
    except FetchError as e:
        say(f"Failed to fetch signature: {e}")
        if not insecure:  # the install cannot go on without it: no image request to wait for
            raise SignatureMissing(f"{SIG_MISSING} ({e})", hint=MISSING_HINT) from None
        signature = None
    remote = fetcher.open(url, what="image")
    src = ImageSource(remote, f"URL {url}", remote.name, remote.length, signature, sha256)
    try:
        return require_signature(src, insecure, say)
    except BaseException:
        remote.close()
        raise


def open_stream(fetcher: Fetcher, spec: SourceSpec, insecure: bool, say: Any) -> ImageSource:
    assert spec.stream is not None
    base = spec.stream_base_url
    stream = load_stream(fetcher, spec.stream, base) if base else load_stream(fetcher, spec.stream)
    artifacts = select_artifacts(stream, spec.architecture, "metal", spec.format)
    if len(artifacts) != 1 or "disk" not in artifacts:
        raise NestosError(
            f"found {len(artifacts)} artifacts for format {spec.format}, expected one disk image"
        )
    art = artifacts["disk"]
    desc = (
        f"Downloading NestOS {spec.stream} {spec.architecture} metal {spec.format} image "
        f"and signature\n  {art.location}"
    )
    return open_url(
        fetcher,
        art.location,
        insecure,
        say,
        sig_url=art.signature,
        sha256=art.sha256,
        description=desc,
    )


def require_signature(src: ImageSource, insecure: bool, say: Any) -> ImageSource:
    if src.signature is None:
        if not insecure:
            src.close()
            raise SignatureMissing(SIG_MISSING, hint=MISSING_HINT)
        say("Signature not found; skipping verification as requested")
    return src
