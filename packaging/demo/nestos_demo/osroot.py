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

from nestos_demo import VERSION, debroot
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
GUEST = Path(__file__).resolve().parent / "guest" / "os"
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
# Ignition writes SSH keys as fragments in ~/.ssh/authorized_keys.d/ (as on FCOS)
SSHD_CONFIG = """# NestOS demo: keys only, including the ones Ignition wrote
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""
# The first boot runs `systemctl preset-all` (enable only): keep networkd and friends off,
# NetworkManager owns the network. Ignition's own 20-ignition.preset comes first.
PRESET = """disable systemd-networkd.service
disable systemd-networkd.socket
disable systemd-network-generator.service
disable systemd-networkd-wait-online.service
disable systemd-resolved.service
disable getty@.service
"""
# Debian's Ignition asks the root for its SELinux policy type before relabeling (a no-op here)
SELINUX_CONFIG = """# NestOS demo (Debian based): no SELinux
SELINUX=disabled
SELINUXTYPE=default
"""
# as Fedora CoreOS's coreos-sudo-group: the admin group (sudo on Debian) needs no password
SUDOERS = "%sudo ALL=(ALL) NOPASSWD: ALL\n"
# volatile journal: nothing to flush to /var at boot
JOURNALD = """[Journal]
Storage=volatile
"""
# Units a headless TCG guest does not need and that cost seconds of emulated CPU per boot.
MASK = (
    "e2scrub_reap.service e2scrub_all.timer fstrim.timer dpkg-db-backup.timer apt-daily.timer "
    "apt-daily-upgrade.timer systemd-pstore.service modprobe@drm.service modprobe@fuse.service "
    "modprobe@dm_mod.service modprobe@efi_pstore.service dev-hugepages.mount dev-mqueue.mount "
    "sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount "
    "getty@tty1.service systemd-firstboot.service"
).split()
# Debian's ssh.service checks the config (sshd -t) before starting: a second sshd per boot
SSH_DROPIN = """[Service]
ExecStartPre=
"""
UNITS = ("nestos-firstboot-complete.service", "nestos-sshd-keygen.service")
# files Ignition may be asked to write must not exist (it does not overwrite by default);
# host keys and machine-id are made on the first boot
REMOVE = (
    "etc/hostname",
    "etc/resolv.conf",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ecdsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "var/lib/dbus/machine-id",
    "var/cache/apt",
    "var/lib/apt/lists",
    "boot",
    # runs ifupdown's hooks on every NetworkManager event; there is no ifupdown here
    "etc/NetworkManager/dispatcher.d/01-ifupdown",
)


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
    h.update(Path(__file__).read_bytes() + Path(debroot.__file__).read_bytes())
    h.update(_tree_bytes(GUEST))
    return h.hexdigest()


def _install_guest_files(root: Path) -> None:
    dracut_dir = root / "usr" / "lib" / "dracut" / "modules.d"
    src = GUEST / "dracut" / "50nestos-firstboot"
    shutil.copytree(src, dracut_dir / src.name, dirs_exist_ok=True)
    units = root / "usr" / "lib" / "systemd" / "system"
    for name in UNITS:
        shutil.copy2(GUEST / "units" / name, units / name)


def _configure(root: Path) -> None:
    """NestOS identity, fstab, sshd and preset policy; first-boot state left unset."""
    debroot.remove_paths(root, REMOVE)
    debroot.write_file(root, "usr/lib/os-release", OS_RELEASE)
    debroot.write_file(root, "etc/fstab", FSTAB)
    debroot.write_file(root, "etc/ssh/sshd_config.d/50-nestos.conf", SSHD_CONFIG)
    debroot.write_file(root, "etc/selinux/config", SELINUX_CONFIG)
    debroot.write_file(root, "etc/sudoers.d/nestos-sudo-group", SUDOERS, 0o440)
    debroot.write_file(root, "usr/lib/systemd/system-preset/80-nestos.preset", PRESET)
    # "uninitialized": systemd treats the boot as the first one (machine-id, preset-all)
    debroot.write_file(root, "etc/machine-id", "uninitialized\n", 0o444)
    for d in ("boot", "var/cache/apt", "var/lib/apt/lists"):
        (root / d).mkdir(parents=True, exist_ok=True)
    debroot.write_file(root, "etc/systemd/journald.conf.d/50-nestos.conf", JOURNALD)
    debroot.write_file(root, "etc/systemd/system/ssh.service.d/50-nestos.conf", SSH_DROPIN)
    run(["chroot", root, "systemctl", "enable", *UNITS], env=debroot.chroot_env())
    run(["chroot", root, "systemctl", "mask", *MASK], env=debroot.chroot_env())


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
            _install_guest_files(root)
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
    prune_builds(base, keep=1)
    return done
