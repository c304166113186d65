"""The conversion plan: options in, everything `convert` would do out (checks, artifacts,
kernel command line, generated Ignition, target identity, what is and is not carried).

Builds the plan from host readers without changing anything (a --stream plan only asks sizes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from nestos_installer import disks
from nestos_installer.errors import ConfigError, NestosError, UsageError
from nestos_installer.signature.policy import Keyring
from x2nestos import deadman, hostfacts, identity, netstate, network, preflight
from x2nestos.artifacts import (
    DEFAULT_STREAM_BASE,
    LiveArtifacts,
    from_iso,
    from_pxe_dir,
    from_stream,
)
from x2nestos.initramfs import Compression, archive
from x2nestos.payload import (
    DestSource,
    LivePaths,
    Payload,
    check_ignition_hash,
    config_logins,
    dest_ignition,
    installer_config,
    parse_user_ignition,
    redacted,
    redacted_keyfile,
    target_check_script,
)
from x2nestos.preflight import Check, Status


class Carry(enum.Enum):
    HOSTNAME = "hostname"
    SSH_KEYS = "ssh-keys"
    HOST_KEYS = "host-keys"
    NETWORK = "network"
    CONSOLE = "console"

    @classmethod
    def parse(cls, text: str) -> FrozenSet[Carry]:
        out = set()
        for word in filter(None, (w.strip() for w in text.split(","))):
            if word == "all":
                out |= set(cls)
            elif word == "none":
                continue
            else:
                try:
                    out.add(cls(word))
                except ValueError:
                    names = ",".join(c.value for c in cls)
                    raise UsageError(
                        f"unknown --carry item {word!r} (choose from {names})"
                    ) from None
        return frozenset(out)


DEFAULT_CARRY = frozenset({Carry.CONSOLE, Carry.NETWORK})
DEFAULT_WORK_DIR = Path("/var/lib/x2nestos")
STDIN = "from stdin"  # how a config given as `-i -` is named in messages
# Interface naming kargs: carried with the network so carried names keep meaning the same NICs.
NAMING_KARGS = ("net.ifnames=", "biosdevname=")
# The installer config's dest-device while no target is usable (the plan is shown, never staged).
NO_TARGET = "<no usable target disk: see the target check>"
DEFAULT_CONSOLES = {"x86_64": ("tty0", "ttyS0,115200n8"), "aarch64": ("tty0", "ttyAMA0,115200n8")}


@dataclass(frozen=True)
class ConvertConfig:
    """Frozen options of doctor / plan / convert."""

    root: Path = Path("/")
    target: Optional[str] = None
    iso: Optional[Path] = None
    pxe: Optional[Path] = None
    stream: Optional[str] = None
    stream_base_url: str = DEFAULT_STREAM_BASE
    keyrings: Tuple[Path, ...] = ()
    insecure: bool = False
    ignition_file: Optional[Path] = None
    ignition_data: Optional[bytes] = field(default=None, repr=False)  # `-i -`: read from stdin
    ignition_url: Optional[str] = None
    ignition_hash: Optional[str] = None
    carry: FrozenSet[Carry] = DEFAULT_CARRY
    save_partlabel: Tuple[str, ...] = ()
    live_kargs: Tuple[str, ...] = ()
    dest_kargs: Tuple[str, ...] = ()
    work_dir: Optional[Path] = None
    compression: Compression = Compression.GZIP
    force_unmounted_data: bool = False
    network_mode: network.NetworkMode = network.NetworkMode.CARRY
    # interfaces that must be carried besides the default route's (under --host: the one
    # holding the controller's SSH session)
    must_carry: Tuple[str, ...] = ()
    deadline: int = deadman.DEFAULT_DEADLINE  # seconds to the live installer's first write

    def __post_init__(self) -> None:
        sources = [s for s in (self.iso, self.pxe, self.stream) if s]
        if len(sources) > 1:
            raise UsageError("give only one of --iso, --pxe, --stream")
        if (self.ignition_file or self.ignition_data is not None) and self.ignition_url:
            raise UsageError("give only one of --ignition-file, --ignition-url")
        if self.ignition_hash and not self.ignition_url:
            raise UsageError("--ignition-hash needs --ignition-url")
        if self.ignition_url:
            if not self.ignition_url.startswith(("http://", "https://")):
                raise UsageError(f"unknown protocol for URL '{self.ignition_url}'")
            if self.ignition_url.startswith("http://") and not self.ignition_hash:
                raise UsageError(
                    "a plain http:// --ignition-url needs --ignition-hash",
                    hint="or use --ignition-file (no HTTP server needed)",
                )
            if self.ignition_hash:
                check_ignition_hash(self.ignition_hash)

    @property
    def has_source(self) -> bool:
        return bool(self.iso or self.pxe or self.stream)

    @property
    def staging(self) -> Path:
        return self.work_dir or DEFAULT_WORK_DIR

    def keys(self) -> List[bytes]:
        """The trusted keys, as the installer trusts them: shipped with nestos-installer, then
        /etc/nestos-installer/keys.d/*.asc, then --keyring."""
        return Keyring.default(self.keyrings).read()


@dataclass
class Plan:
    config: ConvertConfig
    checks: List[Check]
    machine: str
    kexec: hostfacts.KexecFacts
    systemd: bool
    target: Optional[disks.TargetDisk]
    artifacts: Optional[LiveArtifacts]
    payload: Optional[Payload]
    archive_size: int
    cmdline: str
    carried: List[str] = field(default_factory=list)
    not_carried: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    interfaces: List[network.IfacePlan] = field(default_factory=list)
    host: Dict[str, Any] = field(default_factory=dict)  # what the host is, as found

    @property
    def ok(self) -> bool:
        return preflight.verdict(self.checks)

    def first_failure(self) -> Optional[Check]:
        return next((c for c in self.checks if c.status.blocks), None)

    def to_json(self) -> Dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
            "architecture": self.machine,
            "kexec": {
                "syscall": "kexec_file_load" if self.kexec.use_file_load else "kexec_load",
                "secure-boot": self.kexec.secure_boot,
                "lockdown": self.kexec.lockdown,
                "jump": "systemctl kexec" if self.systemd else "kexec -e",
            },
            "target": self.target.to_json() if self.target else None,
            "artifacts": self.artifacts.to_json() if self.artifacts else None,
            "kernel-command-line": self.cmdline,
            "installer-config": self.payload.installer if self.payload else None,
            "destination-ignition": redacted(self.payload.dest) if self.payload else None,
            "network": [i.to_json() for i in self.interfaces],
            "network-keyfiles": {
                n: redacted_keyfile(t)
                for n, t in (self.payload.keyfiles.items() if self.payload else [])
            },
            "appended-archive-size": self.archive_size,
            "carried": self.carried,
            "not-carried": self.not_carried,
            "notes": self.notes,
            "host": self.host,
            "on-failure": deadman.policy(self.config.deadline),
        }


def _artifacts(cfg: ConvertConfig, arch: str, download: bool) -> Optional[LiveArtifacts]:
    if cfg.iso:
        return from_iso(cfg.iso)
    if cfg.pxe:
        return from_pxe_dir(cfg.pxe)
    if cfg.stream:
        canon = hostfacts.canonical_arch(arch) or arch
        dest = cfg.root / str(cfg.staging).lstrip("/") / "download"
        if download:
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        return from_stream(
            cfg.stream,
            cfg.stream_base_url,
            canon,
            dest,
            cfg.keys(),
            insecure=cfg.insecure,
            download=download,
        )
    return None


def _consoles(cfg: ConvertConfig, arch: str) -> Tuple[List[str], bool]:
    """(consoles for the live kernel and the installed system, carried from the host?)"""
    if Carry.CONSOLE in cfg.carry:
        found = hostfacts.consoles(hostfacts.read_cmdline(cfg.root))
        if found:
            return found, True
    canon = hostfacts.canonical_arch(arch) or "x86_64"
    return list(DEFAULT_CONSOLES.get(canon, ("tty0",))), False


def _network(
    cfg: ConvertConfig, checks: List[Check]
) -> Tuple[network.NetworkFacts, netstate.RuntimeState]:
    """The network NestOS will have (and the runtime state it was read with), and the check
    that it still carries this host."""
    runtime = netstate.read_runtime(cfg.root)
    if cfg.network_mode is network.NetworkMode.DHCP:
        net = network.dhcp_facts(runtime)
    elif Carry.NETWORK in cfg.carry:
        net = network.read_network(cfg.root, runtime)
    else:
        net = network.NetworkFacts()
    checks.append(
        network.check(
            net,
            runtime,
            mode=cfg.network_mode,
            carried=Carry.NETWORK in cfg.carry,
            must_carry=cfg.must_carry,
        )
    )
    return net, runtime


def _carry_lists(
    ident: identity.Identity, net: network.NetworkFacts
) -> Tuple[List[str], List[str], List[str]]:
    """(carried, not carried, notes) of the identity and network readers."""
    carried = [f"ssh-keys: {len(u.keys)} key(s) of {u.name}" for u in ident.users]
    carried += [f"host-keys: {p}" for p in sorted(ident.host_keys)]
    if ident.hostname:
        carried.append(f"hostname: {ident.hostname}")
    carried += [f"network: {i.line()}" for i in net.interfaces if i.carried]
    return carried, ident.not_carried + net.not_carried, ident.notes + net.notes


def _login(cfg: ConvertConfig, user: DestSource, ident: identity.Identity) -> Check:
    given = str(cfg.ignition_file) if cfg.ignition_file else cfg.ignition_url
    if cfg.ignition_data is not None:
        given = STDIN
    users, pulls = config_logins(user.config) if user.config is not None else ([], False)
    return preflight.check_login(
        [u.name for u in ident.users], given, users, unknown=bool(cfg.ignition_url) or pulls
    )


def _artifact_checks(
    cfg: ConvertConfig, machine: str, download: bool
) -> Tuple[Optional[LiveArtifacts], List[Check]]:
    checks: List[Check] = []
    art: Optional[LiveArtifacts] = None
    try:
        art = _artifacts(cfg, machine, download)
    except NestosError as e:
        checks.append(Check("artifacts", Status.FAIL, str(e)))
    else:
        if art is not None:
            checks.append(
                Check(
                    "artifacts",
                    Status.OK,
                    f"{art.kind.value} {art.origin}: "
                    + ", ".join(f"{n} {p.size} bytes" for n, p in art.parts.items()),
                )
            )
            if "rootfs" not in art.parts:
                checks.append(
                    Check(
                        "artifacts-rootfs",
                        Status.WARN,
                        "no rootfs.img: the live initramfs must fetch its rootfs over the network",
                    )
                )
    checks.append(preflight.check_arch(machine, art))
    if art is not None:
        checks.append(preflight.check_live_image(art))
    return art, checks


def default_target(root: Path) -> str:
    """The one physical disk under /, /boot and /boot/efi (through LVM, RAID, multipath)."""
    found = disks.root_disks(root)
    if not found:
        raise UsageError("no target disk given and the disk holding / was not found")
    if len(found) > 1:
        # A VG over two PVs, an MD mirror, or two paths of one multipath LUN: which disk (or
        # path) to replace is the user's call.
        raise UsageError(
            f"no target disk given and this system is on {len(found)} disks "
            f"({', '.join(found)}): name the one to replace with -d"
        )
    return found[0]


def _target(cfg: ConvertConfig) -> Tuple[Optional[disks.TargetDisk], Optional[str]]:
    """(the target disk, or why there is none): -d must name a whole physical disk."""
    try:
        return disks.resolve(cfg.target or default_target(cfg.root), cfg.root), None
    except NestosError as e:
        return None, f"{e}; {e.hint}" if e.hint else str(e)


@dataclass(frozen=True)
class _Carried:
    """What the identity, network and console readers found (build_plan's middle step)."""

    ident: identity.Identity
    net: network.NetworkFacts
    runtime: netstate.RuntimeState
    naming: List[str]
    consoles: List[str]
    carried: List[str]
    not_carried: List[str]
    notes: List[str]


def _carry(cfg: ConvertConfig, machine: str, checks: List[Check]) -> _Carried:
    ident = identity.read_identity(
        cfg.root,
        users=Carry.SSH_KEYS in cfg.carry,
        host_keys=Carry.HOST_KEYS in cfg.carry,
        hostname=Carry.HOSTNAME in cfg.carry,
    )
    net, runtime = _network(cfg, checks)
    carried, not_carried, notes = _carry_lists(ident, net)
    naming: List[str] = []
    if Carry.NETWORK in cfg.carry:
        naming = [a for a in hostfacts.read_cmdline(cfg.root).split() if a.startswith(NAMING_KARGS)]
        carried += [f"network: kernel argument {a}" for a in naming]
    consoles, from_host = _consoles(cfg, machine)
    carried.append(("console: " if from_host else "console (default): ") + " ".join(consoles))
    not_carried += [f"{c.value}: not requested (--carry)" for c in Carry if c not in cfg.carry]
    not_carried += [
        "users' passwords, packages, services, /etc and data on the target "
        "(NestOS is installed fresh)"
    ]
    return _Carried(ident, net, runtime, naming, consoles, carried, not_carried, notes)


def _user_ignition(cfg: ConvertConfig) -> DestSource:
    if cfg.ignition_data is not None:
        return DestSource(config=parse_user_ignition(cfg.ignition_data, STDIN))
    if cfg.ignition_file:
        try:
            data = cfg.ignition_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"reading Ignition config {cfg.ignition_file}") from e
        return DestSource(config=parse_user_ignition(data, str(cfg.ignition_file)))
    if cfg.ignition_url:
        return DestSource(url=cfg.ignition_url, url_hash=cfg.ignition_hash)
    return DestSource()


def _dest_consoles(cfg: ConvertConfig, art: Optional[LiveArtifacts], c: _Carried) -> List[str]:
    """Consoles for the installed system, unless the live installer cannot set them."""
    dest_consoles = c.consoles if Carry.CONSOLE in cfg.carry else []
    directives = (art.features or {}).get("installer-config-directives") if art else None
    if (
        dest_consoles
        and art is not None
        and art.features is not None
        and not (isinstance(directives, dict) and directives.get("console"))
    ):
        c.not_carried.append(
            "console: this live image's installer has no `console` "
            "setting; the installed system keeps its default console"
        )
        return []
    return dest_consoles


def _payload(
    cfg: ConvertConfig,
    target: Optional[disks.TargetDisk],
    art: Optional[LiveArtifacts],
    c: _Carried,
    checks: List[Check],
) -> Tuple[Optional[Payload], int]:
    """The payload archive and its size; what stops it becomes a FAIL check."""
    try:
        user = _user_ignition(cfg)
        checks.append(_login(cfg, user, c.ident))
        # Without a usable target (a check says why) the plan still shows everything else.
        dest, size, serial = NO_TARGET, 0, None
        if target is not None and target.stable_path:
            dest, size, serial = target.stable_path, target.size, target.serial
        paths = LivePaths(art.prefix if art else "nestos")
        inst = installer_config(
            dest,
            paths=paths,
            consoles=_dest_consoles(cfg, art, c),
            save_partlabel=cfg.save_partlabel,
            append_karg=tuple(c.naming) + cfg.dest_kargs,
        )
        payload = Payload(
            dest_ignition(user, c.ident, c.net.keyfiles),
            inst,
            c.net.keyfiles,
            target_check_script(dest, size, serial),
            paths,
            deadman.members(deadman.live_config(cfg.deadline, dest, size, serial)),
        )
        return payload, len(archive(payload.members(), cfg.compression))
    except NestosError as e:
        checks.append(Check("ignition", Status.FAIL, str(e)))
        return None, 0


def _host_checks(cfg: ConvertConfig, art: Optional[LiveArtifacts], size: int) -> List[Check]:
    """Memory, staging space and how the jump happens."""
    root = cfg.root
    mem = hostfacts.meminfo(root)
    checks = [preflight.check_memory(mem, art, size or preflight.PAYLOAD_ESTIMATE)]
    need = preflight.memory_need(art, size)["disk"] if art is not None else 0
    checks.append(preflight.check_staging(root, cfg.staging, need))
    systemd = hostfacts.systemd_is_pid1(root)
    checks.append(
        Check(
            "jump",
            Status.INFO,
            "systemctl kexec (orderly shutdown)"
            if systemd
            else "kexec -e (systemd is not PID 1: no orderly shutdown)",
        )
    )
    return checks


def _save_notes(cfg: ConvertConfig, target: Optional[disks.TargetDisk]) -> List[str]:
    if target is None:
        return []
    return [
        f"--save-partlabel {pat}: no partition on the target matches"
        for pat in cfg.save_partlabel
        if not preflight.saved_partitions(target, [pat])
    ]


def build_plan(cfg: ConvertConfig, *, download: bool = False) -> Plan:
    """Gather facts and compute everything; errors that stop a conversion become FAIL checks."""
    root = cfg.root
    machine = hostfacts.machine_arch(root)
    kexec = hostfacts.kexec_facts(root)
    checks = [
        preflight.check_root(root),
        preflight.check_container(hostfacts.container(root)),
        preflight.check_hypervisor(hostfacts.hypervisor(root)),
    ]
    art, art_checks = _artifact_checks(cfg, machine, download)
    checks += art_checks
    checks += preflight.check_kexec(
        kexec, hostfacts.have_tool(root, "kexec"), hostfacts.kexec_install_command(root)
    )
    target, target_error = _target(cfg)
    checks += preflight.check_target(
        target, cfg.save_partlabel, cfg.force_unmounted_data, target_error
    )
    c = _carry(cfg, machine, checks)
    payload, size = _payload(cfg, target, art, c, checks)
    kargs = list(art.live_kargs if art else []) + c.naming + list(cfg.live_kargs)
    if not any(k.startswith("panic=") for k in kargs):
        kargs.append(deadman.PANIC_KARG)
    kargs += [f"console={x}" for x in c.consoles]
    checks += _host_checks(cfg, art, size)
    return Plan(
        cfg,
        checks,
        machine,
        kexec,
        hostfacts.systemd_is_pid1(root),
        target,
        art,
        payload,
        size,
        " ".join(kargs),
        c.carried,
        c.not_carried,
        c.notes + _save_notes(cfg, target),
        c.net.interfaces,
        host_facts(root, c.runtime),
    )


def host_facts(root: Path, runtime: netstate.RuntimeState) -> Dict[str, Any]:
    """The host as found (whatever is carried): name, system, who logs in by key, addresses."""
    users = identity.read_identity(root, users=True, host_keys=False, hostname=False).users
    return {
        "hostname": identity.read_hostname(root),
        "os": hostfacts.os_release(root).get("PRETTY_NAME"),
        "kernel": hostfacts.kernel_release(root),
        "users-with-keys": [u.name for u in users],
        "addresses": {
            link.name: [a.cidr for a in link.addresses]
            for link in runtime.links
            if link.addresses and not link.loopback
        },
        "default-route": runtime.default_devices(),
    }


def staging_paths(cfg: ConvertConfig) -> Tuple[Path, Path, Path]:
    """(directory, kernel, combined initrd) under the staging dir, seen through cfg.root."""
    d = cfg.root / str(cfg.staging).lstrip("/")
    return d, d / "vmlinuz", d / "initrd-combined.img"
