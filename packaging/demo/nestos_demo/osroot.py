"""The root of the first-boot demo image: Debian bookworm with systemd, NetworkManager, sshd and
Ignition, plus a dracut initramfs whose Ignition (Debian's, with its dracut module) applies
boot/ignition/config.ign on the first boot. Cached by input hash; root needed (mmdebstrap, loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nestos_demo import VERSION, debroot, guestconf
from nestos_demo.kernel import Kernel, ensure_kernel
from nestos_demo.util import (
    BuildError,
    Steps,
    cache_root,
    cached_build,
    prune_builds,
    read_stamp,
    run,
)

PACKAGES = (
    "systemd-sysv udev kmod iproute2 network-manager openssh-server sudo ignition dracut-core curl "
    "dracut-network"
).split()
# the initramfs takes the disk and filesystem drivers; the root adds the NIC's
MODULES = "virtio_blk virtio_pci virtio_net ext4 xfs autofs4".split()
# Ignition's module pulls in what it depends on (network, url-lib, qemu); systemd-networkd
# serves rd.neednet=1/ip= in the initramfs (NetworkManager's stack there doubles its size).
# No dracut-systemd: systemd's own generators mount root=, and dracut's hook services cost
# a quarter of the initramfs' time under TCG.
DRACUT_MODULES = (
    "systemd systemd-initrd systemd-networkd base fs-lib rootfs-block kernel-modules "
    "udev-rules ignition nestos-firstboot"
).split()
GUEST = guestconf.GUEST
MiB = 1 << 20

OS_RELEASE = f"""NAME="NestOS"
VERSION="{VERSION} (demo, Debian 12 based)"
ID=nestos
ID_LIKE=debian
VERSION_ID="{VERSION}"
PRETTY_NAME="NestOS demo {VERSION}"
VARIANT="demo"
VARIANT_ID=demo
HOME_URL="https://gitee.com/openeuler/nestos-installer"
"""
FSTAB = """# <file system> <mount point> <type> <options> <dump> <pass>
LABEL=root / xfs defaults 0 0
LABEL=boot /boot ext4 defaults 0 0
"""
UNITS = ("nestos-firstboot-complete.service",)


@dataclass(frozen=True)
class OsRoot:
    """A built root: the xfs filesystem image (label `root`) and the dracut initramfs."""

    root_image: Path
    initramfs: Path
    kernel_version: str
    input_hash: str


def _tree_bytes(base: Path) -> bytes:
    h = hashlib.sha256()
    for p in sorted(base.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(base)).encode() + b"\0" + p.read_bytes())
            h.update(b"x" if os.access(p, os.X_OK) else b"-")
    return h.digest()


def input_hash(kernel_version: str) -> str:
    """Everything the root depends on: packages, modules, kernel, this code, guest/os files."""
    h = hashlib.sha256()
    h.update(f"{debroot.SUITE}\0{PACKAGES}\0{MODULES}\0{DRACUT_MODULES}\0".encode())
    h.update(f"{kernel_version}\0".encode())
    for name in ("osroot.py", "debroot.py", "guestconf.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    h.update(_tree_bytes(GUEST))
    return h.hexdigest()


def _configure(root: Path) -> None:
    """NestOS identity, fstab, the dracut module, the shared guest settings."""
    dracut_dir = root / "usr" / "lib" / "dracut" / "modules.d"
    src = GUEST / "dracut" / "50nestos-firstboot"
    shutil.copytree(src, dracut_dir / src.name, dirs_exist_ok=True)
    debroot.remove_paths(root, ("boot", "var/cache/apt", "var/lib/apt/lists"))
    for d in ("boot", "var/cache/apt", "var/lib/apt/lists"):
        (root / d).mkdir(parents=True)
    debroot.write_file(root, "usr/lib/os-release", OS_RELEASE)
    debroot.write_file(root, "etc/fstab", FSTAB)
    guestconf.configure(root, UNITS)


def _dracut(root: Path, kernel: Kernel, out: Path) -> None:
    """Build the initramfs inside the root (its own dracut, Ignition and udev rules)."""
    script = (
        'mount -t proc proc "$1/proc"; mount -t sysfs sysfs "$1/sys"; '
        'mount --rbind /dev "$1/dev"; shift; exec chroot "$@"'
    )
    run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-ec",
            script,
            "sh",
            root,
            root,
            "dracut",
            "--quiet",
            "--force",
            "--no-hostonly",
            "--no-hostonly-cmdline",
            "--reproducible",
            "--modules",
            " ".join(DRACUT_MODULES),
            "--compress",
            "zstd",
            "--kver",
            kernel.version,
            "/initramfs.img",
        ],
        env=debroot.chroot_env(),
    )
    shutil.move(root / "initramfs.img", out)


def _xfs_image(root: Path, out: Path) -> None:
    """An xfs filesystem (label `root`) holding the tree, sized to it plus room to grow."""
    used = int(run(["du", "-sx", "--block-size=1", root]).split()[0])
    size = -(-(used * 5 // 4 + 96 * MiB) // (16 * MiB)) * 16 * MiB
    with open(out, "wb") as f:
        f.truncate(size)
    # mkfs.xfs >= 5.19 refuses filesystems < 300 MB unless the fstests overrides are set
    env = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
    run(["mkfs.xfs", "-q", "-f", "-L", "root", out], env=env)
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=out.parent))
    run(["mount", "-o", "loop", out, mnt])
    try:
        run(["cp", "-a", f"{root}/.", f"{mnt}/"])
    finally:
        run(["umount", mnt])
        mnt.rmdir()


def _build(out: Path, kernel: Kernel, digest: str, steps: Steps) -> None:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out))
    try:
        root = work / "root"
        with steps.step(f"Debian {debroot.SUITE} root: {' '.join(PACKAGES)} (mmdebstrap)"):
            debroot.mmdebstrap(root, PACKAGES, work)
        with steps.step("kernel modules, NestOS units, dracut initramfs with Ignition"):
            debroot.install_modules(root, kernel, MODULES)
            _configure(root)
            _dracut(root, kernel, out / "initramfs.img")
        with steps.step("root filesystem (xfs, label root)"):
            _xfs_image(root, out / "root.img")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = {"input_hash": digest, "kernel_version": kernel.version}
    (out / "manifest.json").write_text(json.dumps(stamp, indent=2) + "\n")


def _load(d: Path, digest: str) -> Optional[OsRoot]:
    m = read_stamp(d, digest)
    if m is None:
        return None
    return OsRoot(d / "root.img", d / "initramfs.img", m["kernel_version"], digest)


def build_os_root(
    kernel: Optional[Kernel] = None,
    cache_dir: Optional[Path] = None,
    steps: Optional[Steps] = None,
) -> OsRoot:
    """Return the cached root for `kernel`, building it (a few minutes) if missing.

    Safe for parallel callers (flock); older builds are removed once a new one is done.
    """
    if os.geteuid() != 0:
        raise BuildError("the first-boot image's root needs root (mmdebstrap, loop mount)")
    say = steps if steps is not None else Steps(quiet=True)
    kernel = kernel if kernel is not None else ensure_kernel()
    base = (cache_dir if cache_dir is not None else cache_root()) / "osroot"
    digest = input_hash(kernel.version)
    done = cached_build(
        base / digest[:16],
        lambda d: _load(d, digest),
        lambda tmp: _build(tmp, kernel, digest, say),
        say,
        "Debian root + dracut initramfs",
    )
    prune_builds(base, keep=2)  # ~400 MB each; checkouts of two versions share the cache
    return done
