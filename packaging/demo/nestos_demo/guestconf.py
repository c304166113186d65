"""What the two Debian guests (the first-boot image's root, the live rootfs) share to behave like
NestOS: Ignition's prerequisites, sshd with keys only, the admin group, first-boot presets, and
the units a TCG guest can do without. Packaging code: writes into a root tree, runs chroot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from nestos_demo import debroot
from nestos_demo.util import run

GUEST = Path(__file__).resolve().parent / "guest" / "os"
# Debian's Ignition asks the root for its SELinux policy type before relabeling, then runs
# `setfiles`; these guests have no SELinux, so guest/os/bin/setfiles labels nothing.
SELINUX_CONFIG = """# NestOS demo (Debian based): no SELinux
SELINUX=disabled
SELINUXTYPE=default
"""
# Ignition writes SSH keys as fragments in ~/.ssh/authorized_keys.d/ (as on FCOS)
SSHD_CONFIG = """# NestOS demo: keys only, including the ones Ignition wrote
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""
# as Fedora CoreOS's coreos-sudo-group: the admin group (sudo on Debian) needs no password;
# NestOS's admin group is `wheel` (configs such as x2nestos's name it): there too
SUDOERS = "%sudo ALL=(ALL) NOPASSWD: ALL\n%wheel ALL=(ALL) NOPASSWD: ALL\n"
ADMIN_GROUP = "wheel"  # Debian has none; Ignition's useradd --groups fails on a missing group
# The first boot runs `systemctl preset-all` (enable only). NetworkManager owns the network,
# so networkd and friends stay off; everything else not named "enable" by a preset (Ignition's
# 20-ignition.preset, systemd's 90-systemd.preset) keeps its state from the image build, as
# with Fedora's default-disable policy.
PRESETS = {
    "80-nestos.preset": (
        "disable systemd-networkd.service\ndisable systemd-networkd.socket\n"
        "disable systemd-network-generator.service\ndisable systemd-networkd-wait-online.service\n"
        "disable systemd-resolved.service\ndisable getty@.service\n"
    ),
    "99-nestos-default-disable.preset": "disable *\n",
}
# volatile journal: nothing to flush to /var at boot
JOURNALD = "[Journal]\nStorage=volatile\n"
# Debian's ssh.service checks the config (sshd -t) before starting: a second sshd per boot
SSH_DROPIN = "[Service]\nExecStartPre=\n"
# Units a headless TCG guest does not need and that cost seconds of emulated CPU per boot.
MASK = (
    "e2scrub_reap.service e2scrub_all.timer fstrim.timer dpkg-db-backup.timer apt-daily.timer "
    "apt-daily-upgrade.timer systemd-pstore.service modprobe@drm.service modprobe@fuse.service "
    "modprobe@dm_mod.service modprobe@efi_pstore.service dev-hugepages.mount dev-mqueue.mount "
    "sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount "
    "getty@tty1.service systemd-firstboot.service"
).split()
# Files a config may ask Ignition to write must not exist (it does not overwrite by default);
# host keys and machine-id are made on the first boot.
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
    # runs ifupdown's hooks on every NetworkManager event; there is no ifupdown here
    "etc/NetworkManager/dispatcher.d/01-ifupdown",
)
SSH_KEYGEN_UNIT = "nestos-sshd-keygen.service"


def configure(root: Path, units: Sequence[str] = ()) -> None:
    """Apply the shared settings to `root`; enable SSH_KEYGEN_UNIT and `units` (guest/os/units)."""
    debroot.remove_paths(root, REMOVE)
    debroot.write_file(root, "etc/selinux/config", SELINUX_CONFIG)
    shutil.copy2(GUEST / "bin" / "setfiles", root / "usr" / "sbin" / "setfiles")
    debroot.write_file(root, "etc/ssh/sshd_config.d/50-nestos.conf", SSHD_CONFIG)
    run(["chroot", root, "groupadd", "-f", "-r", ADMIN_GROUP], env=debroot.chroot_env())
    debroot.write_file(root, "etc/sudoers.d/nestos-sudo-group", SUDOERS, 0o440)
    for name, text in PRESETS.items():
        debroot.write_file(root, f"usr/lib/systemd/system-preset/{name}", text)
    # "uninitialized": systemd treats the boot as the first one (machine-id, preset-all)
    debroot.write_file(root, "etc/machine-id", "uninitialized\n", 0o444)
    debroot.write_file(root, "etc/systemd/journald.conf.d/50-nestos.conf", JOURNALD)
    debroot.write_file(root, "etc/systemd/system/ssh.service.d/50-nestos.conf", SSH_DROPIN)
    enable = [SSH_KEYGEN_UNIT, *units]
    for name in enable:
        shutil.copy2(GUEST / "units" / name, root / "usr" / "lib" / "systemd" / "system" / name)
    run(["chroot", root, "systemctl", "enable", *enable], env=debroot.chroot_env())
    run(["chroot", root, "systemctl", "mask", *MASK], env=debroot.chroot_env())
