"""The autoinstall live ISO: the demo ISO layout booting the systemd live rootfs, whose initrd
also carries a signed metal image (the offline image source), so an `iso customize`d copy
installs unattended. Cached by input hash; the default busybox demo ISO is left alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from nestos_demo import build, live, liveroot
from nestos_demo.kernel import Kernel, ensure_kernel
from nestos_demo.util import cache_root, file_lock, sha256_file

ISO_NAME = f"{build.PREFIX}-autoinstall.x86_64.iso"


def input_hash(kernel: Kernel, image: Path, signature: Path, keyring: Path) -> str:
    """Hash of the demo sources, the live rootfs inputs and the offline image files."""
    h = hashlib.sha256(build.input_hash(kernel.version, liveroot.payload_key(kernel)).encode())
    for p in (image, signature, keyring):
        h.update(b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def _concat(parts: tuple[Path, ...], dest: Path) -> None:
    """One initrd from several cpio archives, each padded to 4 bytes (as the kernel wants)."""
    with open(dest, "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 4 << 20)
            out.write(b"\0" * (-out.tell() % 4))


def build_autoinstall_iso(
    image: Path,
    signature: Path,
    keyring: Path,
    cache_dir: Optional[Path] = None,
    kernel: Optional[Kernel] = None,
) -> Path:
    """Return <cache>/autoiso/<hash>.iso, building it if missing (root needed for the rootfs).

    images/pxeboot/initrd.img = systemd live rootfs cpio + a cpio with `image`, its detached
    `signature` and the armored public `keyring` at /usr/share/nestos-installer/metal. Safe for
    parallel callers (flock).
    """
    kernel = kernel if kernel is not None else ensure_kernel()
    base = (cache_dir if cache_dir is not None else cache_root()) / "autoiso"
    base.mkdir(parents=True, exist_ok=True)
    digest = input_hash(kernel, image, signature, keyring)[:16]
    out = base / f"{digest}.iso"
    if out.exists():
        return out
    with file_lock(base / f".{digest}.lock"):
        if out.exists():
            return out
        rootfs = liveroot.build_live_rootfs(cache_dir=cache_dir, kernel=kernel)
        work = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=base))
        try:
            offline = liveroot.offline_image_cpio(image, signature, keyring, work / "offline.cpio")
            initrd = work / "initrd.img"
            _concat((rootfs, offline), initrd)
            rootfs_img = work / "rootfs.img"
            live.make_rootfs(rootfs_img)
            tmp = work / ISO_NAME
            live.build_iso(
                tmp, live.LivePayload(kernel.vmlinuz, initrd, rootfs_img), build.VOLUME_ID
            )
            os.replace(tmp, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # each ISO is 120-250 MB: keep the two newest (the busybox and the first-boot image's)
        isos = sorted(base.glob("*.iso"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in isos[2:]:
            old.unlink(missing_ok=True)
    return out
