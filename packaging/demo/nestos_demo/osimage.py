"""The first-boot demo image: osroot's Debian root in the NestOS disk layout (GPT, GRUB for BIOS
and UEFI, BLS entry, console block, platforms.json, ignition.firstboot stamp), zstd compressed
and signed. Cached by input hash like the busybox build; building needs root (osroot).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from nestos_demo import VERSION, grub, metal, osroot
from nestos_demo.kernel import ensure_kernel
from nestos_demo.sign import DemoKey
from nestos_demo.util import (
    BuildError,
    Steps,
    cache_root,
    cached_build,
    prune_builds,
    read_stamp,
    run,
    sha256_file,
)

PREFIX = f"nestos-demo-os-{VERSION}"
NAMES = {
    "raw": f"{PREFIX}-metal.x86_64.raw",
    "raw_zst": f"{PREFIX}-metal.x86_64.raw.zst",
    "public_key": "demo-signing-key.asc",
}
# the dracut initramfs (~28 MB) and the kernel, with room for what installers add
BOOT_MIB = 96


@dataclass(frozen=True)
class OsImage:
    """One finished build of the first-boot image (all files inside `out_dir`)."""

    out_dir: Path
    version: str
    kernel_version: str
    input_hash: str

    @property
    def raw(self) -> Path:
        return self.out_dir / NAMES["raw"]

    @property
    def raw_zst(self) -> Path:
        """The image as installers fetch it: zstd (xz -6 of ~400 MB takes minutes on 2 cores)."""
        return self.out_dir / NAMES["raw_zst"]

    @property
    def raw_zst_sig(self) -> Path:
        return self.out_dir / (NAMES["raw_zst"] + ".sig")

    @property
    def public_key(self) -> Path:
        return self.out_dir / NAMES["public_key"]

    def manifest(self) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads((self.out_dir / "manifest.json").read_text())
        return data


def input_hash(root: osroot.OsRoot) -> str:
    """The root's hash plus the disk assembly code and the GRUB modules it installs."""
    h = hashlib.sha256(root.input_hash.encode())
    for name in ("metal.py", "grub.py", "gpt.py", "osimage.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    for p in (
        grub.GRUB_LIB / "i386-pc" / "moddep.lst",
        grub.GRUB_LIB / "x86_64-efi" / "moddep.lst",
    ):
        if p.exists():
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def _build_into(out: Path, root: osroot.OsRoot, digest: str, steps: Steps) -> None:
    raw, zst = out / NAMES["raw"], out / NAMES["raw_zst"]
    kernel = ensure_kernel()
    if kernel.version != root.kernel_version:
        raise BuildError(f"root built for kernel {root.kernel_version}, have {kernel.version}")
    with steps.step("disk image (GPT, BIOS + UEFI GRUB, boot ext4, the Debian root as xfs)"):
        initramfs = root.initramfs.read_bytes()
        metal.build_disk(
            raw, kernel, initramfs, VERSION, 512, root_image=root.root_image, boot_mib=BOOT_MIB
        )
    with steps.step("compress (zstd) and sign (a new demo key)"):
        with open(zst, "wb") as f:
            run(["zstd", "-q", "-T0", "-8", "-c", raw], stdout=f)
        with DemoKey() as key:
            key.sign(zst)
            key.export_public(out / NAMES["public_key"])
    manifest = {
        "input_hash": digest,
        "version": VERSION,
        "kernel_version": kernel.version,
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": {
            "raw_zst": {
                "name": zst.name,
                "sha256": sha256_file(zst),
                "uncompressed-sha256": sha256_file(raw),
            }
        },
        "names": NAMES,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _load(out: Path, digest: str) -> Optional[OsImage]:
    m = read_stamp(out, digest)
    return None if m is None else OsImage(out, m["version"], m["kernel_version"], digest)


def build_os_image(out: Optional[Path] = None, *, steps: Optional[Steps] = None) -> OsImage:
    """Build (or reuse) the first-boot image. Default `out`: <cache>/demo-os/<input hash>.

    The first build takes a few minutes (mmdebstrap, dracut), later ones return at once. Safe
    to call from several processes (flock).
    """
    say = steps if steps is not None else Steps(quiet=True)
    root = osroot.build_os_root(steps=say)
    digest = input_hash(root)
    out = Path(out) if out is not None else cache_root() / "demo-os" / digest[:16]
    out = out.resolve()
    done = cached_build(
        out,
        lambda d: _load(d, digest),
        lambda tmp: _build_into(tmp, root, digest, say),
        say,
        "first-boot image",
    )
    if out.parent == cache_root() / "demo-os":
        prune_builds(out.parent, keep=2)  # each build is ~600 MB (raw + zst)
    return done
