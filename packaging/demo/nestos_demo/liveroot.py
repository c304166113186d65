"""The demo live root filesystem: Debian + systemd, NetworkManager, sshd, Ignition and our
installer with its autoinstall units; /init (liveinit.py) runs Ignition on the embedded config.
A zstd newc cpio that boots whole as an initramfs, cached by input hash. Packaging code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from nestos_demo import debroot, guestconf
from nestos_demo.kernel import Kernel, ensure_kernel
from nestos_demo.live import LivePayload, features, make_rootfs
from nestos_demo.util import cache_root, file_lock, package_dir, run

SUITE = debroot.SUITE
PACKAGES = (
    "systemd-sysv udev kmod iproute2 util-linux mount fdisk gdisk e2fsprogs xfsprogs dosfstools "
    "gpgv gnupg xz-utils zstd gzip python3 python3-click python3-requests python3-yaml "
    "python3-gnupg python3-tqdm python3-parted python3-cryptography python3-pycdlib "
    "python3-urllib3 network-manager openssh-server sudo ignition"
).split()
# modules the guest may need (Debian builds them as modules); modprobe adds dependencies
MODULES = (
    "virtio_blk virtio_net virtio_pci virtio_scsi sd_mod sr_mod ext4 xfs vfat nls_cp437 "
    "nls_iso8859_1 isofs squashfs loop overlay autofs4"
).split()
REPO = Path(__file__).resolve().parents[3]
PY_PACKAGES = ("nestos_installer", "nestos_stream", "x2nestos")
SYSTEMD_SRC = REPO / "packaging" / "systemd"
LIVEINIT = Path(__file__).with_name("liveinit.py")
UNIT_DIR = "usr/lib/systemd/system"
GENERATOR_DIR = "usr/lib/systemd/system-generators"
LIBEXEC = "usr/libexec"
OFFLINE_DIR = "usr/share/nestos-installer/metal"

CONSOLE_SCRIPT = """#!/usr/bin/python3
import sys
from {pkg}.cli import main
sys.exit(main())
"""


def _tree_files(root: Path) -> List[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )


def input_hash(kernel_version: str) -> str:
    """Hash of everything the rootfs depends on: package list, kernel, our sources, this file."""
    h = hashlib.sha256()
    h.update(f"{SUITE}\0{' '.join(PACKAGES)}\0{' '.join(MODULES)}\0{kernel_version}\0".encode())
    for name in ("liveroot.py", "liveinit.py", "debroot.py", "guestconf.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    for p in _tree_files(guestconf.GUEST):
        h.update(str(p.relative_to(guestconf.GUEST)).encode() + b"\0" + p.read_bytes())
    for base in [*(package_dir(REPO, p) for p in PY_PACKAGES), REPO / "packaging/systemd"]:
        for p in _tree_files(base):
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _install_ours(root: Path) -> None:
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    for pkg in PY_PACKAGES:
        shutil.copytree(
            package_dir(REPO, pkg),
            site / pkg,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    # byte-compile with the rootfs' own python: saves seconds of each boot under TCG
    run(
        [
            "chroot",
            root,
            "python3",
            "-m",
            "compileall",
            "-q",
            *(f"/usr/lib/python3/dist-packages/{pkg}" for pkg in PY_PACKAGES),
        ]
    )
    for script, pkg in (("nestos-installer", "nestos_installer"), ("x2nestos", "x2nestos")):
        path = root / "usr" / "bin" / script
        path.write_text(CONSOLE_SCRIPT.format(pkg=pkg))
        path.chmod(0o755)
    units = root / UNIT_DIR
    for f in sorted(SYSTEMD_SRC.iterdir()):
        if f.suffix in (".service", ".target"):
            shutil.copy2(f, units / f.name)
        elif f.name == "nestos-installer-generator":
            (root / GENERATOR_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, root / GENERATOR_DIR / f.name)
        elif f.is_file() and os.access(f, os.X_OK):
            (root / LIBEXEC).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, root / LIBEXEC / f.name)


def _configure(root: Path) -> None:
    etc = root / "etc"
    (etc / "nestos").mkdir(parents=True, exist_ok=True)
    (etc / "nestos-live-initramfs").write_text("")
    (etc / "nestos" / "features.json").write_text(json.dumps(features(), indent=2) + "\n")
    (etc / "fstab").write_text("# live system: everything is in the initramfs\n")
    # Ignition on the embedded config, keyfiles to NetworkManager, then systemd
    init = root / "init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.write_text("#!/usr/bin/python3\n" + LIVEINIT.read_text())
    init.chmod(0o755)
    guestconf.configure(root)
    for doc in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt"):
        shutil.rmtree(root / doc, ignore_errors=True)
        (root / doc).mkdir(parents=True, exist_ok=True)


ZSTD = ("zstd", "-q", "-1", "-T0")


def pack_cpio(root: Path, out: Path, compressor: Sequence[str] = ZSTD) -> None:
    """Pack `root` as a newc cpio (owned by root), compressed by `compressor` (none if empty)."""
    names = run(["find", ".", "-mindepth", "1", "-print0"], cwd=root)
    raw = out.with_name(out.name + ".cpio")
    with open(raw, "wb") as f:
        run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-0", "-R", "0:0"],
            input=names,
            stdout=f,
            cwd=root,
        )
    if not compressor:
        os.replace(raw, out)
        return
    with open(out, "wb") as f:
        run([*compressor, "-c", raw], stdout=f)
    raw.unlink()


def build_live_rootfs(cache_dir: Optional[Path] = None, kernel: Optional[Kernel] = None) -> Path:
    """Return <cache>/liveroot/<hash>.cpio.zst, building it (~1 min, root needed) if missing.

    Safe for parallel callers (flock). The cpio boots whole as the initramfs of `kernel`.
    """
    kernel = kernel if kernel is not None else ensure_kernel()
    base = (cache_dir if cache_dir is not None else cache_root()) / "liveroot"
    base.mkdir(parents=True, exist_ok=True)
    digest = input_hash(kernel.version)[:16]
    out = base / f"{digest}.cpio.zst"
    if out.exists():
        return out
    with file_lock(base / f".{digest}.lock"):
        if out.exists():
            return out
        work = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=base))
        try:
            root = work / "root"
            debroot.mmdebstrap(root, PACKAGES, work)
            debroot.install_modules(root, kernel, MODULES)
            _install_ours(root)
            _configure(root)
            tmp = work / "rootfs.cpio.zst"
            pack_cpio(root, tmp)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # keep the newest two (~110 MB each): checkouts of two versions share the cache
        builds = sorted(base.glob("*.cpio.zst"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in builds[2:]:
            old.unlink(missing_ok=True)
            (base / f".{old.name.split('.')[0]}.lock").unlink(missing_ok=True)
    return out


def offline_image_cpio(image: Path, signature: Path, keyring: Path, out: Path) -> Path:
    """An uncompressed cpio adding the signed metal image at /usr/share/nestos-installer/metal
    (compressed already: the kernel would only spend time on a second layer).

    Appended to the live rootfs initrd it gives autoinstall its offline image source.
    """
    with tempfile.TemporaryDirectory(prefix="nestos-offline-") as tmp:
        root = Path(tmp) / "root"
        d = root / OFFLINE_DIR
        d.mkdir(parents=True)
        shutil.copy2(image, d / image.name)
        shutil.copy2(signature, d / f"{image.name}.sig")
        shutil.copy2(keyring, d / "key.asc")
        pack_cpio(root, out, compressor=())
    return out


def payload_key(kernel: Kernel) -> str:
    """Cache key for `build.build(live_payload=live_payload, payload_key=...)`."""
    return "liveroot-" + input_hash(kernel.version)[:16]


def live_payload(kernel: Kernel, work: Path) -> LivePayload:
    """A `build.PayloadFactory`: the systemd live rootfs as the live initramfs (ISO and PXE).

    The rootfs cpio carries etc/nestos-live-initramfs, features.json and /init (liveinit.py,
    then systemd), so the live media boot straight into it; rootfs.img stays the squashfs
    stand-in.
    """
    rootfs_img = work / "live-rootfs.img"
    make_rootfs(rootfs_img)
    return LivePayload(kernel.vmlinuz, build_live_rootfs(kernel=kernel), rootfs_img)
