"""Build every demo artifact into one directory, cached by a hash of all build inputs.

Inputs: this package's sources, the kernel package version, busybox and the GRUB modules (and the
key of a custom live payload). A second build with the same inputs returns at once.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from nestos_demo import VERSION, ignition, live, metal, stream
from nestos_demo.initramfs import BUSYBOX, live_initramfs, metal_initramfs
from nestos_demo.kernel import Kernel, ensure_kernel, resolve_package
from nestos_demo.sign import DemoKey
from nestos_demo.util import (
    Steps,
    cache_root,
    cached_build,
    prune_builds,
    read_stamp,
    run,
    sha256_file,
)

PKG_DIR = Path(__file__).resolve().parent
PREFIX = f"nestos-demo-{VERSION}"
VOLUME_ID = f"nestos-demo-{VERSION}"
NAMES = {
    "raw": f"{PREFIX}-metal.x86_64.raw",
    "raw_xz": f"{PREFIX}-metal.x86_64.raw.xz",
    "raw_4k_xz": f"{PREFIX}-metal4k.x86_64.raw.xz",
    "iso": f"{PREFIX}-live.x86_64.iso",
    "pxe_kernel": f"{PREFIX}-live-kernel-x86_64",
    "pxe_initramfs": f"{PREFIX}-live-initramfs.x86_64.img",
    "pxe_rootfs": f"{PREFIX}-live-rootfs.x86_64.img",
    "public_key": "demo-signing-key.asc",
    "ignition": "demo.ign",
}
SIGNED = ("raw_xz", "raw_4k_xz", "iso", "pxe_kernel", "pxe_initramfs", "pxe_rootfs")

# (kernel, work dir) -> LivePayload: lets a richer live environment replace the busybox one
PayloadFactory = Callable[[Kernel, Path], live.LivePayload]


@dataclass(frozen=True)
class Artifacts:
    """Paths of one finished build (all inside `out_dir`)."""

    out_dir: Path
    version: str
    kernel_version: str
    input_hash: str

    def path(self, key: str) -> Path:
        return self.out_dir / NAMES[key]

    def sig(self, key: str) -> Path:
        return self.out_dir / (NAMES[key] + ".sig")

    @property
    def raw(self) -> Path:
        return self.path("raw")

    @property
    def raw_xz(self) -> Path:
        return self.path("raw_xz")

    @property
    def raw_xz_sig(self) -> Path:
        return self.sig("raw_xz")

    @property
    def raw_4k_xz(self) -> Path:
        return self.path("raw_4k_xz")

    @property
    def raw_4k_xz_sig(self) -> Path:
        return self.sig("raw_4k_xz")

    @property
    def iso(self) -> Path:
        return self.path("iso")

    @property
    def iso_sig(self) -> Path:
        return self.sig("iso")

    @property
    def pxe_kernel(self) -> Path:
        return self.path("pxe_kernel")

    @property
    def pxe_initramfs(self) -> Path:
        return self.path("pxe_initramfs")

    @property
    def pxe_rootfs(self) -> Path:
        return self.path("pxe_rootfs")

    @property
    def public_key(self) -> Path:
        return self.path("public_key")

    @property
    def ignition(self) -> Path:
        return self.path("ignition")

    @property
    def volume_id(self) -> str:
        return VOLUME_ID

    def manifest(self) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads((self.out_dir / "manifest.json").read_text())
        return data

    def write_stream(self, base_url: str, dest: Optional[Path] = None) -> Path:
        """streams/demo.json (or `dest`) with locations under `base_url`; see stream.py."""
        return stream.write_stream(self.out_dir, base_url, dest)


def input_hash(kernel_package: str, payload_key: str = "") -> str:
    """Hash of everything the build output depends on."""
    h = hashlib.sha256()
    h.update(f"{kernel_package}\0{payload_key}\0".encode())
    for p in sorted(PKG_DIR.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(PKG_DIR)).encode() + b"\0" + p.read_bytes())
    for p in (
        BUSYBOX,
        Path("/usr/lib/grub/i386-pc/moddep.lst"),
        Path("/usr/lib/grub/x86_64-efi/moddep.lst"),
    ):
        if p.exists():
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def _xz(src: Path, dst: Path) -> None:
    # multi-block so that xz -T0 (and the installer) can decompress in parallel
    with open(dst, "wb") as f:
        run(["xz", "-T0", "-6", "--check=crc64", "--block-size=8MiB", "-c", src], stdout=f)


def _default_payload(kernel: Kernel, work: Path) -> live.LivePayload:
    initrd = work / "live-initrd.img"
    initrd.write_bytes(live_initramfs(kernel, live.features()))
    rootfs = work / "live-rootfs.img"
    live.make_rootfs(rootfs)
    return live.LivePayload(kernel.vmlinuz, initrd, rootfs)


def _build_into(
    out: Path, kernel: Kernel, digest: str, steps: Steps, payload_factory: PayloadFactory
) -> None:
    n = NAMES
    work = out / ".work"
    work.mkdir()
    files: Dict[str, Dict[str, str]] = {}
    with steps.step(f"initramfs (busybox + modules of kernel {kernel.version})"):
        initramfs = metal_initramfs(kernel)
    with steps.step("metal disk image (GPT, BIOS + UEFI GRUB, boot ext4, root xfs)"):
        metal.build_disk(out / n["raw"], kernel, initramfs, VERSION, 512)
        metal.build_disk(work / "4k.raw", kernel, initramfs, VERSION, 4096)
    with steps.step("compress images (xz, multi-block)"):
        _xz(out / n["raw"], out / n["raw_xz"])
        _xz(work / "4k.raw", out / n["raw_4k_xz"])
        files["raw_xz"] = {"uncompressed-sha256": sha256_file(out / n["raw"])}
        files["raw_4k_xz"] = {"uncompressed-sha256": sha256_file(work / "4k.raw")}
    with steps.step("live ISO and PXE files"):
        payload = payload_factory(kernel, work)
        shutil.copy(payload.kernel, out / n["pxe_kernel"])
        shutil.copy(payload.initramfs, out / n["pxe_initramfs"])
        shutil.copy(payload.rootfs, out / n["pxe_rootfs"])
        live.build_iso(out / n["iso"], payload, VOLUME_ID)
    with steps.step("demo signing key (gpg, ed25519) and detached signatures"):
        with DemoKey() as key:
            for k in SIGNED:
                key.sign(out / n[k])
            key.export_public(out / n["public_key"])
    with steps.step("demo Ignition config"):
        ignition.write_demo_config(out / n["ignition"])
    for k in SIGNED:
        files.setdefault(k, {}).update(name=n[k], sha256=sha256_file(out / n[k]))
    manifest = {
        "input_hash": digest,
        "version": VERSION,
        "kernel_version": kernel.version,
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": files,
        "names": n,
    }
    shutil.rmtree(work)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _load(out: Path, digest: str) -> Optional[Artifacts]:
    m = read_stamp(out, digest)
    return None if m is None else Artifacts(out, m["version"], m["kernel_version"], digest)


def build(
    out: Optional[Path] = None,
    *,
    steps: Optional[Steps] = None,
    live_payload: Optional[PayloadFactory] = None,
    payload_key: str = "",
) -> Artifacts:
    """Build (or reuse) all artifacts. Default `out`: <cache>/demo/<input hash>.

    Safe to call from several processes at once (flock). `live_payload` + `payload_key` swap in
    another live environment; the key must change whenever the payload does.
    """
    say = steps if steps is not None else Steps(quiet=True)
    package = resolve_package()
    digest = input_hash(package, payload_key)
    out = Path(out) if out is not None else cache_root() / "demo" / digest[:16]
    out = out.resolve()

    def fill(tmp: Path) -> None:
        with say.step(f"kernel {package} (apt-get download, cached)"):
            kernel = ensure_kernel()
        _build_into(tmp, kernel, digest, say, live_payload or _default_payload)

    done = cached_build(out, lambda d: _load(d, digest), fill, say, "demo artifacts")
    if out.parent == cache_root() / "demo":
        prune_builds(out.parent, keep=3)  # each build is ~100 MB
    return done
