"""Read-only facts about the running host (kernel, firmware, memory, virtualisation);
mounts and disks live in nestos_installer.disks.

Every reader takes `root` so tests run it on a directory tree; stdlib + errors, no commands run.
Host files are read through read_host_text/read_host_bytes: regular files only, size-capped.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nestos_installer.errors import NestosError

ROOT = Path("/")
# Configuration files are small; anything larger is not one we could understand anyway.
MAX_HOST_FILE = 1 << 20


class HostFileError(NestosError):
    """A host file x2nestos cannot read or understand: reported as not carried, never raised
    out of a plan (the message names the file as it is on the host, and why)."""


def host_name(rel: str) -> str:
    """How the user knows a file: its path on the host, whatever root we read it under."""
    return "/" + rel.lstrip("/")


def read_host_bytes(root: Path, rel: str, *, limit: int = MAX_HOST_FILE) -> bytes:
    """A regular file's bytes (at most `limit`); a directory, FIFO or device is refused
    without blocking. Raises HostFileError naming the file."""
    name = host_name(rel)
    try:
        fd = os.open(root / rel.lstrip("/"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise HostFileError(f"{name}: {e.strerror or e}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise HostFileError(f"{name}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise HostFileError(f"{name}: {e.strerror or e}") from e
    if len(data) > limit:
        raise HostFileError(f"{name}: larger than {limit} bytes")
    return data


def read_host_text(root: Path, rel: str, *, utf8: bool = False) -> str:
    """A host file's text; undecodable bytes are replaced unless `utf8` (YAML must be UTF-8)."""
    data = read_host_bytes(root, rel)
    try:
        return data.decode("utf-8", "strict" if utf8 else "replace")
    except UnicodeDecodeError as e:
        raise HostFileError(f"{host_name(rel)}: not UTF-8 (byte {e.start})") from e


# EFI global variable GUID; the SecureBoot variable is 4 attribute bytes + 1 value byte.
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

# Architecture names as artifacts and `uname -m` spell them, mapped to one canonical name.
ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loongarch64",
}


def _read(root: Path, rel: str) -> Optional[str]:
    try:
        return (root / rel.lstrip("/")).read_text(errors="replace")
    except OSError:
        return None


def _read_bytes(root: Path, rel: str) -> Optional[bytes]:
    try:
        return (root / rel.lstrip("/")).read_bytes()
    except OSError:
        return None


def canonical_arch(name: str) -> Optional[str]:
    """The canonical architecture name, or None when we do not know it."""
    return ARCH_ALIASES.get(name.strip().lower())


def machine_arch(root: Path = ROOT) -> str:
    """`uname -m` of the host: /proc/sys/kernel/arch when present, else os.uname()."""
    text = _read(root, "proc/sys/kernel/arch")
    if text and text.strip():
        return text.strip()
    return os.uname().machine


def kernel_release(root: Path = ROOT) -> str:
    text = _read(root, "proc/sys/kernel/osrelease")
    return text.strip() if text else os.uname().release


def read_cmdline(root: Path = ROOT) -> str:
    text = _read(root, "proc/cmdline")
    return text.strip() if text else ""


def consoles(cmdline: str) -> List[str]:
    """Every `console=` value of a kernel command line, in order (the last one is /dev/console)."""
    return [arg[len("console=") :] for arg in cmdline.split() if arg.startswith("console=")]


def meminfo(root: Path = ROOT) -> Dict[str, int]:
    """/proc/meminfo as bytes per key (kB lines multiplied out)."""
    out: Dict[str, int] = {}
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        m = re.match(r"^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?\s*$", line)
        if m:
            mult = 1024 if line.rstrip().endswith("kB") else 1
            out[m.group(1)] = int(m.group(2)) * mult
    return out


@dataclass(frozen=True)
class KexecFacts:
    """What the running kernel allows for kexec."""

    supported: bool  # /sys/kernel/kexec_loaded exists (CONFIG_KEXEC_CORE)
    loaded: bool
    load_disabled: bool  # kernel.kexec_load_disabled=1 blocks both syscalls until reboot
    lockdown: Optional[str]  # none / integrity / confidentiality; None when no lockdown LSM
    secure_boot: Optional[bool]  # None on BIOS hosts or unreadable efivars
    config_kexec: Optional[bool]  # from /boot/config-<release>, None if that file is missing
    config_kexec_file: Optional[bool]

    @property
    def legacy_blocked(self) -> bool:
        """kexec_load cannot be used: lockdown (set by Secure Boot) forbids unsigned loads."""
        return self.lockdown in ("integrity", "confidentiality") or bool(self.secure_boot)

    @property
    def use_file_load(self) -> bool:
        """Pick kexec_file_load when kexec_load is blocked, or when only file load is built."""
        if self.legacy_blocked:
            return True
        return self.config_kexec is False and bool(self.config_kexec_file)

    @property
    def possible(self) -> bool:
        if not self.supported or self.load_disabled:
            return False
        if self.use_file_load:
            return self.config_kexec_file is not False
        return self.config_kexec is not False


def lockdown_mode(root: Path = ROOT) -> Optional[str]:
    """The bracketed word of /sys/kernel/security/lockdown (`none [integrity] ...`)."""
    text = _read(root, "sys/kernel/security/lockdown")
    if text is None:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def is_efi(root: Path = ROOT) -> bool:
    return (root / "sys/firmware/efi").is_dir()


def secure_boot(root: Path = ROOT) -> Optional[bool]:
    data = _read_bytes(root, f"sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}")
    if data is None or len(data) < 5:
        return False if is_efi(root) and data is None else None
    return data[4] == 1


def _kernel_config(root: Path, release: str) -> Optional[Dict[str, str]]:
    text = _read(root, f"boot/config-{release}") or _read(root, f"lib/modules/{release}/config")
    if text is None:
        return None
    conf: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, val = line.partition("=")
            conf[key] = val
    return conf


def kexec_facts(root: Path = ROOT) -> KexecFacts:
    loaded_text = _read(root, "sys/kernel/kexec_loaded")
    disabled = (_read(root, "proc/sys/kernel/kexec_load_disabled") or "0").strip() == "1"
    conf = _kernel_config(root, kernel_release(root))
    return KexecFacts(
        supported=loaded_text is not None,
        loaded=(loaded_text or "0").strip() == "1",
        load_disabled=disabled,
        lockdown=lockdown_mode(root),
        secure_boot=secure_boot(root),
        config_kexec=None if conf is None else conf.get("CONFIG_KEXEC") == "y",
        config_kexec_file=None if conf is None else conf.get("CONFIG_KEXEC_FILE") == "y",
    )


def container(root: Path = ROOT) -> Optional[str]:
    """Name of the container runtime we run in, or None (kexec never works in a container)."""
    if (root / "run/.containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    text = _read(root, "run/systemd/container")
    if text and text.strip():
        return text.strip()
    env = _read_bytes(root, "proc/1/environ") or b""
    for item in env.split(b"\0"):
        if item.startswith(b"container=") and len(item) > len(b"container="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


_VM_VENDORS: Tuple[Tuple[str, str], ...] = (
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("virtualbox", "virtualbox"),
    ("innotek", "virtualbox"),
    ("xen", "xen"),
    ("microsoft corporation", "hyperv"),
    ("amazon ec2", "amazon"),
    ("google", "google"),
    ("openstack", "openstack"),
    ("alibaba cloud", "alibaba"),
    ("huawei cloud", "huawei"),
)


def hypervisor(root: Path = ROOT) -> Optional[str]:
    """A short hypervisor name from DMI strings, /sys/hypervisor or the cpuinfo flag."""
    for key in ("sys_vendor", "product_name", "bios_vendor", "board_vendor"):
        text = (_read(root, f"sys/class/dmi/id/{key}") or "").strip().lower()
        for needle, name in _VM_VENDORS:
            if needle in text:
                return name
    hv = _read(root, "sys/hypervisor/type")
    if hv and hv.strip():
        return hv.strip()
    for line in (_read(root, "proc/cpuinfo") or "").splitlines():
        if line.startswith("flags") and " hypervisor" in line:
            return "unknown"
    return None


def systemd_is_pid1(root: Path = ROOT) -> bool:
    if (root / "run/systemd/system").is_dir():
        return True
    return (_read(root, "proc/1/comm") or "").strip() == "systemd"


# Filesystems that live in RAM: staging there would not survive to the kexec.
MEMORY_FS = frozenset({"tmpfs", "ramfs", "rootfs"})


# What a probe of a host over SSH stores beside the host's files (see x2nestos/probe.py).
PROBE_DIR = "run/x2nestos"


def have_tool(root: Path, name: str) -> bool:
    """Whether the host has program `name`: on PATH here, or as a probe of it found it."""
    listed = _read(root, f"{PROBE_DIR}/tools")
    if root != ROOT and listed is not None:
        return name in listed.split()
    return shutil.which(name) is not None


def os_release(root: Path = ROOT) -> Dict[str, str]:
    """/etc/os-release (else /usr/lib/os-release) as key -> unquoted value."""
    return parse_os_release(
        _read(root, "etc/os-release") or _read(root, "usr/lib/os-release") or ""
    )


def parse_os_release(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and re.fullmatch(r"[A-Z0-9_]+", key):
            out[key] = value.strip().strip("\"'")
    return out


# package manager -> the command installing kexec-tools with it (non-interactive)
INSTALLERS = (
    ("dnf", ("dnf", "install", "-y", "kexec-tools")),
    ("yum", ("yum", "install", "-y", "kexec-tools")),
    (
        "apt-get",
        ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "kexec-tools"),
    ),
    ("zypper", ("zypper", "--non-interactive", "install", "kexec-tools")),
)
FAMILIES = {"debian": "apt-get", "ubuntu": "apt-get", "suse": "zypper", "opensuse": "zypper"}


def kexec_install_command(root: Path = ROOT) -> Optional[Tuple[str, ...]]:
    """The host's own command installing kexec-tools: its package manager by /etc/os-release
    ID / ID_LIKE (and which of dnf, yum, apt-get, zypper it has); None when unknown."""
    rel = os_release(root)
    ids = [rel.get("ID", "").lower()] + rel.get("ID_LIKE", "").lower().split()
    have = [name for name, _ in INSTALLERS if have_tool(root, name)]
    family = next((FAMILIES[i] for i in ids if i in FAMILIES), None)
    if family is not None and family not in have:
        return None
    pick = family or next((n for n in have if n in ("dnf", "yum")), None)
    return next((argv for name, argv in INSTALLERS if name == pick), None)


def free_space(root: Path, path: str) -> int:
    """Bytes available to root at `path` (an existing directory): statvfs here, or what a
    probe of the host stored for its staging dir (the one place it is asked about)."""
    stored = _read(root, f"{PROBE_DIR}/staging-free")
    free = stored.split()[-1] if stored and stored.split() else ""
    if root != ROOT and free.isdigit():
        return int(free)
    st = os.statvfs(root / path.lstrip("/"))
    return st.f_bavail * st.f_frsize
