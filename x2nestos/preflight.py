"""The doctor's checks: one verdict per concern (ok / warn / fail), computed from facts only.

Pure functions over values gathered by hostfacts, nestos_installer.disks and artifacts;
nothing is changed here.
"""

from __future__ import annotations

import enum
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nestos_installer.disks import Partition, TargetDisk, mount_of, mounts
from x2nestos.artifacts import LiveArtifacts
from x2nestos.hostfacts import MEMORY_FS, KexecFacts, canonical_arch, free_space

MiB = 1 << 20
GiB = 1 << 30
MIN_DISK = 8 * GiB  # NestOS (like FCOS) wants at least 8 GiB
STAGING_MARGIN = 64 * MiB
LIVE_WORKING_SET = 512 * MiB
# The new kernel holds the compressed initrd while unpacking it into tmpfs: budget 3x.
LIVE_INITRD_FACTOR = 3
PAYLOAD_ESTIMATE = 1 * MiB
# Mount points that belong to the OS being replaced; anything else mounted is user data.
SYSTEM_MOUNTS = frozenset(
    {"/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "/tmp", "/var/tmp", "/var/log", "/opt"}
)


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    INFO = "info"

    @property
    def blocks(self) -> bool:
        return self is Status.FAIL


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def to_json(self) -> Dict[str, str]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail}


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n < 10 * GiB else f"{n / GiB:.1f} GiB"


def euid(root: Path) -> Optional[int]:
    try:
        text = (root / "proc/self/status").read_text()
    except OSError:
        return os.geteuid()
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    return None


def check_root(root: Path) -> Check:
    uid = euid(root)
    if uid == 0:
        return Check("root", Status.OK, "running as root")
    return Check("root", Status.FAIL, f"must run as root (effective uid {uid})")


def check_container(name: Optional[str]) -> Check:
    if name:
        return Check(
            "container",
            Status.FAIL,
            f"running in a {name} container; kexec is "
            "impossible here, run x2nestos on the host itself",
        )
    return Check("container", Status.OK, "not in a container")


def check_hypervisor(name: Optional[str]) -> Check:
    if name == "hyperv":
        return Check(
            "virtualization",
            Status.WARN,
            "Hyper-V guest: kexec'd kernels are known to hang in vmbus probing",
        )
    if name:
        return Check("virtualization", Status.INFO, f"virtual machine ({name})")
    return Check("virtualization", Status.INFO, "bare metal (no hypervisor detected)")


def check_arch(machine: str, art: Optional[LiveArtifacts]) -> Check:
    host = canonical_arch(machine)
    if host is None:
        return Check("architecture", Status.FAIL, f"unknown host architecture {machine!r}")
    if art is None:
        return Check("architecture", Status.INFO, f"host is {host}; no artifacts given")
    if art.arch is None:
        return Check(
            "architecture", Status.FAIL, f"unknown architecture of the live kernel in {art.origin}"
        )
    if art.arch != host:
        return Check(
            "architecture", Status.FAIL, f"live kernel is {art.arch} but this host is {host}"
        )
    return Check("architecture", Status.OK, f"{host} host, {art.arch} live kernel")


def check_live_image(art: LiveArtifacts) -> Check:
    """Can this live image be driven by an installer.d config, and which names does it use?"""
    names = f"{art.prefix}.inst.*, /etc/{art.prefix}/installer.d"
    if art.features is None:
        return Check(
            "live-image",
            Status.WARN,
            f"{names} ({art.prefix_source}); no "
            "features.json, assuming it runs installer.d configs",
        )
    if art.features.get("installer-config") is False:
        return Check(
            "live-image",
            Status.FAIL,
            "this live image does not support installer "
            "configs (features.json: installer-config false); use a newer image",
        )
    return Check("live-image", Status.OK, f"{names} ({art.prefix_source})")


def check_kexec(
    k: KexecFacts, have_tool: bool, install: Optional[Sequence[str]] = None
) -> List[Check]:
    out = []
    if not k.supported:
        out.append(
            Check(
                "kexec",
                Status.FAIL,
                "the running kernel has no kexec support (/sys/kernel/kexec_loaded)",
            )
        )
    elif k.load_disabled:
        out.append(
            Check(
                "kexec",
                Status.FAIL,
                "kexec is disabled until reboot (kernel.kexec_load_disabled=1)",
            )
        )
    elif not k.possible:
        out.append(
            Check(
                "kexec",
                Status.FAIL,
                "the kernel was built without the kexec syscall "
                "this host needs ("
                + ("kexec_file_load" if k.use_file_load else "kexec_load")
                + ")",
            )
        )
    else:
        out.append(Check("kexec", Status.OK, "kexec available"))
    if k.loaded:
        out.append(
            Check(
                "kexec-loaded",
                Status.WARN,
                "a kexec kernel is already loaded (x2nestos unload removes it)",
            )
        )
    sb = {True: "on", False: "off", None: "n/a (BIOS)"}[k.secure_boot]
    syscall = "kexec_file_load (-s)" if k.use_file_load else "kexec_load (-c)"
    detail = f"Secure Boot {sb}, lockdown {k.lockdown or 'n/a'}: using {syscall}"
    if k.use_file_load and k.legacy_blocked:
        detail += "; the live kernel must be signed by a key this kernel trusts"
    out.append(Check("kexec-syscall", Status.WARN if k.legacy_blocked else Status.INFO, detail))
    if not have_tool:
        how = f"`{' '.join(install)}`, or pass --install-kexec" if install else "this host's way"
        detail = f"kexec not found: install kexec-tools with {how}"
        out.append(Check("kexec-tools", Status.FAIL, detail))
    return out


def memory_need(art: LiveArtifacts, payload_size: int) -> Dict[str, int]:
    kernel = art.parts["kernel"].size
    initrd = sum(p.size for n, p in art.parts.items() if n != "kernel") + payload_size
    return {
        "staging": kernel + initrd + STAGING_MARGIN,
        "live": kernel + LIVE_INITRD_FACTOR * initrd + LIVE_WORKING_SET,
        "disk": kernel + initrd,
    }


def check_memory(mem: Dict[str, int], art: Optional[LiveArtifacts], payload: int) -> Check:
    avail, total = mem.get("MemAvailable", 0), mem.get("MemTotal", 0)
    if art is None:
        return Check(
            "memory",
            Status.INFO,
            f"{_mib(avail)} available of {_mib(total)}; no artifacts to budget",
        )
    need = memory_need(art, payload)
    if avail < need["staging"]:
        return Check(
            "memory",
            Status.FAIL,
            f"too little RAM: staging the live system needs "
            f"{_mib(need['staging'])}, only {_mib(avail)} available",
        )
    if total < need["live"]:
        return Check(
            "memory",
            Status.FAIL,
            f"too little RAM: the live system needs about "
            f"{_mib(need['live'])} in memory, this host has {_mib(total)}",
        )
    return Check(
        "memory",
        Status.OK,
        f"needs {_mib(need['staging'])} now (have {_mib(avail)}), "
        f"about {_mib(need['live'])} after the jump (have {_mib(total)})",
    )


def check_staging(root: Path, staging: Path, need: int) -> Check:
    rel = "/" + str(staging).lstrip("/")
    m = mount_of(rel, mounts(root))
    fstype = m.fstype if m else "unknown"
    if fstype in MEMORY_FS:
        return Check(
            "staging",
            Status.FAIL,
            f"{rel} is on {fstype} (RAM); stage on disk-backed storage with --work-dir",
        )
    probe = root / rel.lstrip("/")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = free_space(root, "/" + str(probe.relative_to(root)))
    if free < need:
        return Check("staging", Status.FAIL, f"{rel} has {_mib(free)} free, {_mib(need)} needed")
    return Check(
        "staging", Status.OK, f"{rel} on {fstype}, {_mib(free)} free ({_mib(need)} needed)"
    )


def data_mounts(t: TargetDisk, saved_labels: Tuple[str, ...] = ()) -> List[Tuple[str, str, str]]:
    """Mounted filesystems on the disk that are not the old OS and not saved partitions."""
    saved = {p.name for p in t.partitions if p.label and p.label in saved_labels}
    return [
        m for m in t.mounted if m[1] not in SYSTEM_MOUNTS and m[0].rsplit("/", 1)[-1] not in saved
    ]


def saved_partitions(t: TargetDisk, save: Sequence[str]) -> List[Partition]:
    """The partitions whose label matches one of the --save-partlabel globs."""
    return [
        p
        for p in t.partitions
        if p.label and any(fnmatch.fnmatchcase(p.label, pat) for pat in save)
    ]


def _target_identity(t: TargetDisk) -> Check:
    if t.stable_path is None:
        return Check(
            "target",
            Status.FAIL,
            f"{t.kernel_path} has no stable identity (no "
            "serial or WWN in /dev/disk/by-id or sysfs)",
        )
    return Check(
        "target",
        Status.OK,
        f"{t.kernel_path} = {t.stable_path} ({t.by_id_source}), {_mib(t.size)}",
    )


def _target_medium(t: TargetDisk) -> List[Check]:
    out = []
    if t.read_only:
        out.append(Check("target-writable", Status.FAIL, f"{t.kernel_path} is read-only"))
    if t.size < MIN_DISK:
        out.append(
            Check(
                "target-size",
                Status.FAIL,
                f"{t.kernel_path} is {_mib(t.size)}; NestOS needs {_mib(MIN_DISK)}",
            )
        )
    if t.removable:
        out.append(Check("target-removable", Status.WARN, f"{t.kernel_path} is removable"))
    return out


def _target_data(t: TargetDisk, saved: List[Partition], force_data: bool) -> List[Check]:
    data = data_mounts(t, tuple(p.label for p in saved if p.label))
    if data and not force_data:
        what = ", ".join(f"{d} on {m}" for d, m, _ in data)
        return [
            Check(
                "target-data",
                Status.FAIL,
                f"{t.kernel_path} holds mounted data "
                f"that would be lost: {what} (use --force-unmounted-data or "
                "--save-partlabel)",
            )
        ]
    if data:
        return [
            Check(
                "target-data",
                Status.WARN,
                "data that will be lost: " + ", ".join(m for _, m, _ in data),
            )
        ]
    return []


def check_target(
    t: Optional[TargetDisk], save: Sequence[str], force_data: bool, error: Optional[str]
) -> List[Check]:
    if t is None:
        return [Check("target", Status.FAIL, error or "no target disk")]
    saved = saved_partitions(t, save)
    out = [_target_identity(t), *_target_medium(t), *_target_data(t, saved, force_data)]
    used = [f"{m} ({d})" for d, m, _ in t.mounted] + [f"swap {s}" for s in t.swap]
    used += [f"held by {h}" for h in t.holders]
    out.append(Check("target-use", Status.INFO, "in use: " + (", ".join(used) or "nothing")))
    if save:
        names = ", ".join(f"{p.name} ({p.label})" for p in saved) or "none match"
        out.append(Check("target-saved", Status.INFO, f"partitions kept: {names}"))
    return out


def verdict(checks: Sequence[Check]) -> bool:
    return not any(c.status.blocks for c in checks)


def check_login(
    carried: Sequence[str], given: Optional[str], config_users: Sequence[str], unknown: bool
) -> Check:
    """The new system needs a user with an SSH key or a password hash the user gave explicitly.

    `given`: the -i file or -I URL; `unknown`: its users cannot be seen from here (a URL, or a
    config that merges others)."""
    who = list(carried) + [u for u in config_users if u not in carried]
    if who:
        return Check("login", Status.OK, "users who can log in: " + ", ".join(who))
    if given is None:
        return Check(
            "login",
            Status.FAIL,
            "no --ignition-file/--ignition-url and "
            "no SSH keys carried: nobody could log in to the new system",
        )
    if unknown:
        return Check(
            "login",
            Status.WARN,
            f"users of {given} are not visible here: it must give one an SSH key or a password",
        )
    return Check(
        "login",
        Status.FAIL,
        f"{given} has no user with an SSH key or a password hash and no SSH keys are "
        "carried: nobody could log in to the new system (add one, or --carry ssh-keys)",
    )
