"""Live autoinstall: nestos.inst.* kernel args + /etc/nestos/installer.d -> an install plan.

Pure logic (installer.md §3.2): no subprocess, no click. The CLI runs the plan.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nestos_installer import config
from nestos_installer.errors import ConfigError, NestosError, UsageError

INSTALLER_D = Path("/etc/nestos/installer.d")
# where the live media's signed metal image is baked in (PXE rootfs) or mounted (ISO)
OFFLINE_IMAGE_DIRS = (
    Path("/usr/share/nestos-installer/metal"),
    Path("/run/media/iso/images/metal"),
)
KEYRING_NAME = "key.asc"

# Forwarded to the first boot of the installed system (matched as ^name(=.*)?$).
NETWORK_KARGS = (
    "ipv6.disable",
    "net.ifnames",
    "net.naming-scheme",
    "ip",
    "ifname",
    "rd.route",
    "bootdev",
    "BOOTIF",
    "rd.bootif",
    "nameserver",
    "rd.peerdns",
    "biosdevname",
    "vlan",
    "bond",
    "team",
    "bridge",
    "rd.net.timeout.carrier",
    "nestos.no_persist_ip",
    "nestos.force_persist_ip",
)
# Persisted on every boot of the installed system (s390x device activation).
PERSISTENT_KARGS = ("rd.dasd", "rd.zfcp", "rd.znet", "zfcp.allow_lun_scan", "cio_ignore")
# Config keys that name an image source; without one the offline image is used.
SOURCE_KEYS = ("image-url", "image-file", "stream", "offline")
# The image formats the live media may carry, preferred first.
_IMAGE_SUFFIXES = (".raw.xz", ".raw.zst", ".raw.gz", ".raw")


@dataclass(frozen=True)
class Cmdline:
    """A kernel command line split like the live service does: on single spaces, no quoting."""

    args: Tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Cmdline:
        return cls(tuple(a for a in text.strip().split(" ") if a))

    def value(self, name: str) -> Optional[str]:
        """Text after the first '=' of the last `name` arg; the whole arg if it has no '='."""
        found: Optional[str] = None
        for arg in self.args:
            key, eq, val = arg.partition("=")
            if key == name:
                found = val if eq else arg
        return found

    def flag(self, name: str) -> bool:
        """Boolean karg: false iff absent, empty, 0, no or off."""
        val = self.value(name)
        return val is not None and val.lower() not in ("", "0", "no", "off")

    def matching(self, names: Sequence[str]) -> List[str]:
        """Every arg whose key is one of `names`, in command-line order."""
        pattern = re.compile("^(?:" + "|".join(re.escape(n) for n in names) + ")(?:=.*)?$")
        return [a for a in self.args if pattern.match(a)]


@dataclass(frozen=True)
class OfflineImage:
    """A signed metal image shipped on the live media: image, its .sig, the keyring to trust."""

    image: Path
    keyring: Path


@dataclass(frozen=True)
class Invocation:
    """What the live service does: the `install` argv (without the word `install`) and more."""

    argv: Tuple[str, ...]
    config_files: Tuple[Path, ...]
    notices: Tuple[str, ...]
    reboot: bool

    def command_line(self) -> str:
        """The line echoed on the console before installing (never holds Ignition contents)."""
        return " ".join(shlex.quote(a) for a in ("nestos-installer", "install", *self.argv))


def should_run(cmdline: Cmdline, config_files: Sequence[Path]) -> bool:
    """The trigger of the whole flow: an install device karg or a non-empty installer.d."""
    return cmdline.value("nestos.inst.install_dev") is not None or bool(config_files)


def list_config_dir(directory: Path) -> List[Path]:
    """Regular files in `directory` in shell-glob order (names starting with '.' skipped)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(f"listing {directory}") from e
    return [directory / n for n in names if not n.startswith(".") and (directory / n).is_file()]


def _config_keys(path: Path) -> Dict[str, object]:
    """Keys of one config file, by install's parser; errors surface later, from `install`."""
    try:
        return dict(config.parse_file(path))
    except NestosError:
        return {}


def find_offline_image(dirs: Sequence[Path] = OFFLINE_IMAGE_DIRS) -> Optional[OfflineImage]:
    """The first metal image with a .sig and a key.asc beside it, if the media carries one."""
    for d in dirs:
        keyring = d / KEYRING_NAME
        if not keyring.is_file():
            continue
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for suffix in _IMAGE_SUFFIXES:
            for n in names:
                img = d / n
                if n.endswith(suffix) and img.is_file() and Path(f"{img}.sig").is_file():
                    return OfflineImage(img, keyring)
    return None


def build_invocation(
    cmdline: Cmdline,
    config_files: Sequence[Path],
    offline: Optional[OfflineImage] = None,
    machine: Optional[str] = None,
    fetch_retries: str = "infinite",
) -> Invocation:
    """The install argv, in the order of the live service (installer.md §3.2).

    `offline` is used only when neither kargs nor config files name an image source; `machine`
    (default: this host's) decides whether s390x-only kargs apply; `fetch_retries` is
    "infinite" unless a dead-man switch bounds how long the pre-write fetches may retry.
    """
    notices: List[str] = []
    if cmdline.value("nestos.inst") is not None:
        notices.append("nestos.inst=yes is deprecated and ignored")
    args: List[str] = []
    for f in config_files:
        args += ["--config-file", str(f)]
    args += _device_args(cmdline, config_files, notices)
    args += _ignition_and_network_args(cmdline)
    source_args = _source_args(cmdline)
    args += source_args
    args += _flag_args(cmdline, notices, machine or os.uname().machine)
    args += ["--fetch-retries", fetch_retries]
    has_source = any(a in ("--image-url", "--stream") for a in source_args) or any(
        k in _config_keys(f) for f in config_files for k in SOURCE_KEYS
    )
    if not has_source and offline is not None:
        args += ["--image-file", str(offline.image), "--keyring", str(offline.keyring)]
    return Invocation(
        argv=tuple(args),
        config_files=tuple(config_files),
        notices=tuple(notices),
        reboot=not cmdline.flag("nestos.inst.skip_reboot"),
    )


def _device_args(cmdline: Cmdline, config_files: Sequence[Path], notices: List[str]) -> List[str]:
    dev = cmdline.value("nestos.inst.install_dev")
    if dev is not None and dev != "":
        if "/" not in dev:
            notices.append(
                f"nestos.inst.install_dev={dev} is deprecated;"
                f" use nestos.inst.install_dev=/dev/{dev}"
            )
            dev = f"/dev/{dev}"
        return [dev]
    if not config_files:
        raise UsageError(
            "No install device specified.",
            hint="set nestos.inst.install_dev=/dev/... or add dest-device to an installer.d file",
        )
    return []


def _ignition_and_network_args(cmdline: Cmdline) -> List[str]:
    args: List[str] = []
    ign = cmdline.value("nestos.inst.ignition_url")
    if ign and ign != "skip":
        args += ["--ignition-url", ign, "--insecure-ignition"]
    for karg in cmdline.matching(PERSISTENT_KARGS):
        args += ["--append-karg", karg]
    network = cmdline.matching(NETWORK_KARGS)
    if network:
        args += ["--firstboot-args", " ".join(["rd.neednet=1", *network])]
    if cmdline.flag("nestos.inst.copy_network"):
        args.append("--copy-network")
    return args


def _source_args(cmdline: Cmdline) -> List[str]:
    args: List[str] = []
    for karg, opt in (
        ("nestos.inst.image_url", "--image-url"),
        ("nestos.inst.platform_id", "--platform"),
        ("nestos.inst.stream", "--stream"),
        ("nestos.inst.save_partlabel", "--save-partlabel"),
        ("nestos.inst.save_partindex", "--save-partindex"),
    ):
        val = cmdline.value(karg)
        if val:
            args += [opt, val]
    return args


def _flag_args(cmdline: Cmdline, notices: List[str], machine: str) -> List[str]:
    args: List[str] = []
    if cmdline.flag("nestos.inst.insecure"):
        args.append("--insecure")
    if cmdline.flag("nestos.inst.secure_ipl"):
        # Secure IPL is an s390x firmware feature that `install` does not drive (no zipl):
        # never pass an option the install would reject, and never ignore it where it matters.
        if machine == "s390x":
            raise UsageError(
                "nestos.inst.secure_ipl is not supported by this installer",
                hint="remove nestos.inst.secure_ipl, or install with coreos-installer's zipl flow",
            )
        notices.append(
            f"nestos.inst.secure_ipl ignored: Secure IPL exists only on s390x "
            f"(this machine is {machine})"
        )
    return args
