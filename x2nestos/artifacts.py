"""The NestOS live kernel, initramfs and rootfs: found in a live ISO, a PXE directory or a
stream, sized, identified by architecture and signature-checked before anything uses them.
stdlib only: streams via nestos_installer.stream + urlfetch, files via outputs, ISOs via
nestos_installer.live.iso9660 (metadata JSON through live.metadata), signature checks through
nestos_installer.signature.gpgv.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import shutil
import struct
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple

from nestos_installer.errors import (
    HashMismatch,
    ImageFormatError,
    NestosError,
    NotFound,
    SignatureMissing,
)
from nestos_installer.live.iso9660 import IsoImage
from nestos_installer.live.metadata import load_object
from nestos_installer.outputs import TEMP_PREFIX, new_file
from nestos_installer.signature.gpgv import GpgvVerifier
from nestos_installer.stream import load_stream, select_artifacts
from nestos_stream import DEFAULT_BASE_URL, Artifact
from x2nestos.urlfetch import UrlFetcher

ISO_PXE = {
    "kernel": "images/pxeboot/vmlinuz",
    "initramfs": "images/pxeboot/initrd.img",
    "rootfs": "images/pxeboot/rootfs.img",
}
# File names a PXE directory may use: ISO names first, then stream-style names.
PXE_NAMES = {
    "kernel": ("vmlinuz", "*-live-kernel-*", "*kernel*"),
    "initramfs": ("initrd.img", "*-live-initramfs*", "*initramfs*", "initrd*"),
    "rootfs": ("rootfs.img", "*-live-rootfs*", "*rootfs*"),
}
DEFAULT_LIVE_KARGS = ("ignition.firstboot", "ignition.platform.id=metal")
DEFAULT_STREAM_BASE = DEFAULT_BASE_URL  # nestos_stream's, the one both tools use
CHUNK = 4 << 20


class SourceKind(enum.Enum):
    ISO = "iso"
    PXE = "pxe"
    STREAM = "stream"


@dataclass(frozen=True)
class Part:
    name: str  # kernel / initramfs / rootfs
    size: int
    origin: str  # path, "ISO:/images/...", or URL
    path: Optional[Path] = None  # a local file (PXE dir, downloaded stream artifact)


@dataclass
class LiveArtifacts:
    kind: SourceKind
    origin: str
    parts: Dict[str, Part]
    arch: Optional[str]
    live_kargs: List[str]
    verification: List[str] = field(default_factory=list)
    iso: Optional[Path] = None
    prefix: str = "nestos"  # nestos.inst.* + /etc/nestos, or coreos.* in pre-rename images
    prefix_source: str = "assumed"
    features: Optional[Dict[str, Any]] = None  # features.json; None when the image has none

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.parts.values())

    def copy(self, name: str, out: BinaryIO) -> None:
        part = self.parts[name]
        if self.iso is not None and part.path is None:
            with IsoImage.open(self.iso) as iso:
                iso.copy_to(ISO_PXE[name], out)
            return
        assert part.path is not None
        with open(part.path, "rb") as f:
            shutil.copyfileobj(f, out, 4 << 20)

    def initrd_parts(self) -> List[Callable[[BinaryIO], None]]:
        """Writers of the live initramfs and rootfs, in the order kexec's initrd holds them."""
        return [functools.partial(self.copy, n) for n in ("initramfs", "rootfs") if n in self.parts]

    def to_json(self) -> Dict[str, Any]:
        return {
            "source": self.kind.value,
            "origin": self.origin,
            "architecture": self.arch,
            "parts": {n: {"size": p.size, "origin": p.origin} for n, p in self.parts.items()},
            "live-kargs": self.live_kargs,
            "generation": {"prefix": self.prefix, "from": self.prefix_source},
            "features": self.features,
            "verification": self.verification,
        }


def kernel_arch(head: bytes) -> Optional[str]:
    """Architecture of a Linux kernel image from its boot header (None if unknown)."""
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return "x86_64"
    if len(head) >= 0x3C and head[0x38:0x3C] == b"ARM\x64":
        return "aarch64"
    if len(head) >= 0x3C and head[0x30:0x38] == b"RISCV\0\0\0":
        return "riscv64"
    if head[:2] == b"MZ" and len(head) >= 0x40:
        pe = struct.unpack_from("<I", head, 0x3C)[0]
        if pe + 6 <= len(head) and head[pe : pe + 4] == b"PE\0\0":
            machine = struct.unpack_from("<H", head, pe + 4)[0]
            return {
                0x8664: "x86_64",
                0xAA64: "aarch64",
                0x5064: "riscv64",
                0x6264: "loongarch64",
            }.get(machine)
    return None


def _clean_kargs(text: str) -> List[str]:
    """Live kargs minus ISO-only and console ones (we set consoles ourselves)."""
    drop = ("nestos.liveiso=", "coreos.liveiso=", "console=", "BOOT_IMAGE=", "initrd=")
    return [k for k in text.split() if not k.startswith(drop) and not k.startswith("#")]


def from_iso(iso_path: Path) -> LiveArtifacts:
    if not iso_path.is_file():
        raise NotFound(f"ISO {iso_path} does not exist or is not a regular file")
    if not os.access(iso_path, os.R_OK):
        raise ImageFormatError(f"ISO {iso_path} is not readable")
    parts: Dict[str, Part] = {}
    with IsoImage.open(iso_path) as iso:
        for name, inner in ISO_PXE.items():
            hit = iso.get(inner)
            if hit is None or hit.is_dir:
                if name == "rootfs":
                    continue
                raise ImageFormatError(
                    f"ISO {iso_path} has no /{inner}; not a NestOS live ISO with PXE files"
                )
            parts[name] = Part(name, hit.length, f"ISO:/{inner}")
        head = iso.head(ISO_PXE["kernel"], 4096)
        kargs = list(DEFAULT_LIVE_KARGS)
        prefix, source, features = "nestos", "assumed", None
        for gen in ("nestos", "coreos"):  # the ISO's metadata directory names the generation
            hit = iso.get(gen)
            if hit is None or not hit.is_dir:
                continue
            prefix, source = gen, f"/{gen.upper()} directory of the ISO"
            if iso.exists(f"{gen}/kargs.json"):
                kargs = _clean_kargs(
                    str(_json(iso.read(f"{gen}/kargs.json", 1 << 20), iso_path).get("default", ""))
                )
            if iso.exists(f"{gen}/features.json"):
                features = _json(iso.read(f"{gen}/features.json", 1 << 20), iso_path)
            break
    return LiveArtifacts(
        SourceKind.ISO,
        str(iso_path),
        parts,
        kernel_arch(head),
        kargs,
        iso=iso_path,
        prefix=prefix,
        prefix_source=source,
        features=features,
    )


def _json(data: bytes, where: object) -> Dict[str, Any]:
    return load_object(data, f"live image metadata in {where}")


MAX_SCANNED_INITRD = 512 << 20


def inspect_initramfs(art: LiveArtifacts) -> None:
    """Learn the generation and features from the live initramfs (PXE / stream sources):
    etc/<prefix>-live-initramfs and etc/<prefix>/features.json."""
    part = art.parts.get("initramfs")
    if part is None or part.path is None or part.size > MAX_SCANNED_INITRD:
        return
    from nestos_installer.live.initrd import Initrd

    globs = ["etc/*-live-initramfs", "etc/*/features.json"]
    try:
        found = Initrd.from_bytes(part.path.read_bytes(), globs)
    except NestosError:
        return  # unreadable here (e.g. no zstd tool): keep the default, the plan says so
    for gen in ("nestos", "coreos"):
        if found.get(f"etc/{gen}-live-initramfs") is not None:
            art.prefix, art.prefix_source = gen, f"etc/{gen}-live-initramfs in the initramfs"
            feats = found.get(f"etc/{gen}/features.json")
            if feats is not None:
                art.features = _json(feats, part.path)
            return


def _pick(directory: Path, patterns: Sequence[str]) -> Optional[Path]:
    for pat in patterns:
        hits = sorted(p for p in directory.glob(pat) if p.is_file() and p.suffix != ".sig")
        if hits:
            return hits[0]
    return None


def from_pxe_dir(directory: Path) -> LiveArtifacts:
    if not directory.is_dir():
        raise NotFound(f"PXE directory {directory} does not exist")
    parts: Dict[str, Part] = {}
    for name, patterns in PXE_NAMES.items():
        path = _pick(directory, patterns)
        if path is None:
            if name == "rootfs":
                continue
            raise NotFound(f"no live {name} in {directory} (looked for {', '.join(patterns)})")
        parts[name] = Part(name, path.stat().st_size, str(path), path)
    with open(parts["kernel"].path, "rb") as f:  # type: ignore[arg-type]
        head = f.read(4096)
    art = LiveArtifacts(
        SourceKind.PXE, str(directory), parts, kernel_arch(head), list(DEFAULT_LIVE_KARGS)
    )
    inspect_initramfs(art)
    return art


def verify_artifacts(art: LiveArtifacts, keys: Sequence[bytes], *, insecure: bool) -> None:
    """Check the detached `.sig` of the ISO or of each PXE file; record what was verified."""
    if art.kind is SourceKind.STREAM:
        return  # verified while downloading
    targets: List[Tuple[str, Path]]
    if art.iso is not None:
        targets = [("ISO", art.iso)]
    else:
        targets = [(n, p.path) for n, p in art.parts.items() if p.path is not None]
    verifier = GpgvVerifier(keys)
    for label, path in targets:
        sig = Path(str(path) + ".sig")
        if not sig.is_file():
            if insecure:
                art.verification.append(f"{label}: NOT verified (--insecure, no {sig.name})")
                continue
            raise SignatureMissing(
                f"no signature {sig} for {path.name}",
                hint="put the detached .sig next to it, or pass --insecure",
            )
        fpr = verifier.verify(path, sig).fingerprint
        art.verification.append(f"{label}: good signature from {fpr}")


def stream_pxe(fetcher: UrlFetcher, name: str, base: str, arch: str) -> Dict[str, Artifact]:
    """The metal/pxe artifacts (kernel, initramfs, rootfs) of a stream for arch."""
    return select_artifacts(load_stream(fetcher, name, base), arch, "metal", "pxe")


def from_stream(
    name: str,
    base: str,
    arch: str,
    dest: Path,
    keys: Sequence[bytes],
    *,
    insecure: bool,
    download: bool,
) -> LiveArtifacts:
    """Resolve the stream; with download=True fetch + verify (sha256 and .sig) into dest, a
    directory of ours that holds no earlier download (files are never overwritten)."""
    fetcher = UrlFetcher()
    arts = stream_pxe(fetcher, name, base, arch)
    parts: Dict[str, Part] = {}
    verification = []
    verifier = GpgvVerifier(keys)
    for kind in ("kernel", "initramfs", "rootfs"):
        if kind not in arts:
            if kind == "rootfs":
                continue
            raise NestosError(f"stream {name} has no {kind} for {arch}")
        art = arts[kind]
        if not download:
            with fetcher.open(art.location, what=kind) as resp:
                size = int(resp.headers.get("Content-Length") or 0)
            parts[kind] = Part(kind, size, art.location)
            continue
        path = dest / url_name(art.location)
        _download(fetcher, art.location, path, art.sha256, kind)
        if art.signature:
            sig = Path(str(path) + ".sig")
            _download(fetcher, art.signature, sig, None, f"{kind} signature")
            fpr = verifier.verify(path, sig).fingerprint
            verification.append(f"{kind}: good signature from {fpr}")
        elif not insecure:
            raise SignatureMissing(f"stream {name} lists no signature for {kind}")
        parts[kind] = Part(kind, path.stat().st_size, art.location, path)
    live = LiveArtifacts(
        SourceKind.STREAM, f"stream {name}", parts, arch, list(DEFAULT_LIVE_KARGS), verification
    )
    inspect_initramfs(live)
    return live


def url_name(url: str) -> str:
    """The file name an artifact gets: the last segment of its URL's path."""
    name = os.path.basename(urllib.parse.urlsplit(url).path)
    if name in ("", ".", "..") or name.startswith(TEMP_PREFIX):
        raise NestosError(f"cannot derive a file name from URL '{url}'")
    return name


def _download(fetcher: UrlFetcher, url: str, dest: Path, sha256: Optional[str], what: str) -> None:
    """`url` as the new file `dest`, published only once its sha256 (if given) matches."""
    digest = hashlib.sha256()
    with fetcher.open(url, what=what) as resp, new_file(dest) as out:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            out.file.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise HashMismatch(f"{url}: sha256 {digest.hexdigest()} does not match {sha256}")
