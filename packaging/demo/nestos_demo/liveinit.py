"""/init of the demo live rootfs (booted whole as the initramfs): Debian's Ignition applies the
config `iso/pxe customize` embedded as /config.ign, the embedded keyfiles go to NetworkManager,
then systemd starts. Stdlib only: it runs before anything is mounted; it never parses the config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"
# the stages of Ignition's dracut units in their order (not fetch: it needs the network)
STAGES = ("fetch-offline", "kargs", "disks", "mount", "files", "umount")
EMBEDDED = Path("/config.ign")
USER_CONFIG = Path("/usr/lib/ignition/user.ign")
NETWORK_DIRS = (Path("/etc/nestos-firstboot-network"), Path("/etc/coreos-firstboot-network"))
NM_CONNECTIONS = Path("/etc/NetworkManager/system-connections")
SYSTEMD = "/lib/systemd/systemd"
API_MOUNTS = (
    ("proc", "/proc", "proc", "nosuid,nodev,noexec"),
    ("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec"),
    ("devtmpfs", "/dev", "devtmpfs", "nosuid,mode=0755"),
    ("tmpfs", "/run", "tmpfs", "nosuid,nodev,mode=0755"),
)


def say(text: str) -> None:
    print(f"nestos-live-init: {text}", flush=True)


def kernel_args(cmdline: str) -> Dict[str, str]:
    """`key=value` and bare `key` arguments of a kernel command line (the last one wins)."""
    args: Dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        args[key] = value
    return args


def mount_api_filesystems() -> None:
    for source, target, fstype, options in API_MOUNTS:
        if not os.path.ismount(target):
            subprocess.run(["mount", "-t", fstype, "-o", options, source, target], check=False)


def ignition_argv(stage: str, platform: str, root: str = "/", run_dir: str = "/run") -> List[str]:
    return [
        IGNITION,
        f"--root={root}",
        f"--platform={platform}",
        f"--stage={stage}",
        f"--config-cache={run_dir}/ignition.json",
        f"--state-file={run_dir}/ignition/state",
        f"--neednet={run_dir}/ignition/neednet",
        "--log-to-stdout",
    ]


def run_ignition(
    platform: str,
    root: str = "/",
    run_dir: str = "/run",
    env: Optional[Mapping[str, str]] = None,
) -> Optional[str]:
    """Run Ignition's stages against `root`; None when all passed, else what failed.

    As in the initramfs of NestOS, the user config is /usr/lib/ignition/user.ign (Ignition's
    `system` source on the metal platform), copied from the embedded /config.ign.
    """
    if root == "/" and EMBEDDED.exists():
        USER_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMBEDDED, USER_CONFIG)
        os.chmod(USER_CONFIG, 0o600)
    Path(run_dir, "ignition").mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        argv = ignition_argv(stage, platform, root, run_dir)
        if subprocess.run(argv, check=False, env=env).returncode != 0:
            return f"Ignition's {stage} stage failed"
        if stage == "fetch-offline" and Path(run_dir, "ignition", "neednet").exists():
            # NestOS brings the network up in its initramfs for this; this live rootfs starts
            # it only with systemd, after Ignition
            return "the live Ignition config needs the network (remote resources): unsupported"
    return None


def copy_network_keyfiles(
    sources: Sequence[Path] = NETWORK_DIRS, dest: Path = NM_CONNECTIONS
) -> List[str]:
    """Embedded keyfiles (`--network-keyfile`) into NetworkManager's profiles, mode 0600."""
    copied: List[str] = []
    for src in sources:
        if not src.is_dir():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, dest / f.name)
                os.chmod(dest / f.name, 0o600)
                copied.append(f.name)
    return copied


def main() -> None:
    # the kernel starts /init without PATH; Ignition runs useradd, mkfs and friends by name
    os.environ.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    mount_api_filesystems()
    args = kernel_args(Path("/proc/cmdline").read_text())
    extra: List[str] = []
    if "ignition.firstboot" in args:
        failed = run_ignition(args.get("ignition.platform.id") or "metal")
        if failed is not None:
            say(f"{failed}; starting the emergency target")
            extra = ["--unit=emergency.target"]
    elif EMBEDDED.exists():
        say("ignition.firstboot is not on the kernel command line: /config.ign is not applied")
    for name in copy_network_keyfiles():
        say(f"network keyfile {name} copied to {NM_CONNECTIONS}")
    os.execv(SYSTEMD, [SYSTEMD, *sys.argv[1:], *extra])


if __name__ == "__main__":
    main()
