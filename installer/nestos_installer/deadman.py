"""The dead-man switch of an unattended install: its config, the one claim that decides between
"writing began" and "go back to the old system", the deadline watcher and the status file.
Imports errors and run only (stdlib otherwise: the x2nestos zipapp bundles it, Python 3.7+).
"""

from __future__ import annotations

import enum
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from nestos_installer import run as runner
from nestos_installer.errors import ConfigError, InstallFailed

CONFIG = Path("/etc/nestos/deadman.json")
RUN_DIR = Path("/run/nestos-installer")
STATE_FILE = "deadman-state"
STATUS_FILE = "status.json"
ARMED_FILE = "deadman-armed.json"
WATCH_UNIT = "nestos-installer-deadman.service"
DEFAULT_DEADLINE = 600
MIN_DEADLINE = 1
DEFAULT_MIN_MEMORY = 256 << 20
DEFAULT_FETCH_RETRIES = 5
GO_BACK = "reboot-to-old-os"  # the status file's action: nothing written, the old system boots
STAY = "stay-in-live-environment"  # writing began: the live environment stays up with SSH
VERDICT = "nestos-installer dead-man switch:"  # how the banner's line naming the cause starts
JOURNAL_HINT = "journalctl -b -u nestos-installer.service"
REBOOT_GRACE = 90.0  # seconds an orderly reboot may take before the forced one
SYSRQ = Path("/proc/sysrq-trigger")
# A NestOS live system (initramfs-only, or the live rootfs): the only place the switch reboots
# or starts services, so that a test or a mistaken run elsewhere never reboots a machine.
LIVE_MARKERS = (Path("/etc/nestos-live-initramfs"), Path("/run/ostree-live"))

Say = Callable[[str], None]


class State(enum.Enum):
    """Who won the claim: the installer's first write, the deadline, or a failed check."""

    WRITING = "writing"
    EXPIRED = "expired"
    CHECK_FAILED = "check-failed"

    @property
    def goes_back(self) -> bool:
        return self is not State.WRITING


@dataclass(frozen=True)
class TargetIdentity:
    """The disk the plan was made for: its stable path, and its size and serial when known."""

    path: str
    size: Optional[int] = None
    serial: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "serial": self.serial}


def _int(d: Mapping[str, Any], key: str, default: Optional[int], minimum: int) -> Optional[int]:
    value = d.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"dead-man config: {key} must be an integer >= {minimum}")
    return value


@dataclass(frozen=True)
class DeadmanConfig:
    """/etc/nestos/deadman.json: the deadline for the first write (seconds after the watcher
    started, early in the live boot), what the pre-write checks expect, how often they retry."""

    deadline: int = DEFAULT_DEADLINE
    target: Optional[TargetIdentity] = None
    min_memory: int = DEFAULT_MIN_MEMORY
    fetch_retries: int = DEFAULT_FETCH_RETRIES

    @classmethod
    def from_dict(cls, d: Any) -> DeadmanConfig:
        if not isinstance(d, dict):
            raise ConfigError("dead-man config: not a JSON object")
        unknown = sorted(set(d) - {"deadline", "target", "min-memory", "fetch-retries"})
        if unknown:
            raise ConfigError(f"dead-man config: unknown key {unknown[0]!r}")
        target = d.get("target")
        ident: Optional[TargetIdentity] = None
        if target is not None:
            if not isinstance(target, dict) or not isinstance(target.get("path"), str):
                raise ConfigError("dead-man config: target needs a path")
            serial = target.get("serial")
            if serial is not None and not isinstance(serial, str):
                raise ConfigError("dead-man config: target serial must be a string")
            ident = TargetIdentity(target["path"], _int(target, "size", None, 1), serial)
        return cls(
            deadline=_int(d, "deadline", DEFAULT_DEADLINE, MIN_DEADLINE) or DEFAULT_DEADLINE,
            target=ident,
            min_memory=_int(d, "min-memory", DEFAULT_MIN_MEMORY, 0) or 0,
            fetch_retries=_int(d, "fetch-retries", DEFAULT_FETCH_RETRIES, 0) or 0,
        )

    @classmethod
    def load(cls, path: Path = CONFIG) -> Optional[DeadmanConfig]:
        """The config, or None when there is none (no dead-man switch: a plain install)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"reading dead-man config {path}") from e
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as e:
            raise ConfigError(f"parsing dead-man config {path}: not JSON") from e

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"deadline": self.deadline}
        if self.target is not None:
            out["target"] = self.target.to_dict()
        out["min-memory"] = self.min_memory
        out["fetch-retries"] = self.fetch_retries
        return out


def current(run_dir: Path = RUN_DIR) -> Optional[State]:
    """The state claimed so far, or None."""
    try:
        text = (run_dir / STATE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return State(text)
    except ValueError:
        return State.EXPIRED  # an unreadable claim never lets a write begin


def claim(state: State, run_dir: Path = RUN_DIR) -> State:
    """Claim `state` unless another was claimed first (O_EXCL: exactly one wins); returns the
    state that holds. The installer's first write and the way back exclude each other."""
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = run_dir / STATE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
        held = current(run_dir)
        return held if held is not None else State.EXPIRED
    with os.fdopen(fd, "w") as f:
        f.write(state.value + "\n")
        f.flush()
        os.fsync(f.fileno())
    return state


def write_status(run_dir: Path, state: State, detail: str) -> Path:
    """The file the controller reads (over SSH, or on the console's word) to learn the outcome."""
    back = state.goes_back
    status = {
        "state": state.value,
        "writing-began": not back,
        "action": GO_BACK if back else STAY,
        "detail": detail,
        "journal": JOURNAL_HINT,
    }
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = run_dir / STATUS_FILE
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def banner(state: State, detail: str) -> str:
    """What the console says about a failed or expired live environment."""
    if state.goes_back:
        action = (
            "NOTHING WAS WRITTEN to the target; rebooting into the old system "
            "(its disk and bootloader are untouched)"
        )
    else:
        action = (
            "writing had begun: the target was wiped (no partition table); staying in the "
            f"live environment with SSH open and the journal kept ({JOURNAL_HINT})"
        )
    return (
        "\n############################################################\n"
        f"{VERDICT} {detail}\n{action}\n"
        f"status: {RUN_DIR / STATUS_FILE}\n"
        "############################################################"
    )


@dataclass(frozen=True)
class Guard:
    """An install under a dead-man switch: the pre-write expectations, and the claim that must
    be won before the first write."""

    config: DeadmanConfig
    run_dir: Path = RUN_DIR

    def begin_write(self) -> None:
        """Claim the first write; if the deadline or a failed check came first, never write."""
        held = claim(State.WRITING, self.run_dir)
        if held is not State.WRITING:
            raise InstallFailed(
                f"the dead-man switch already decided to go back ({held.value}); not writing"
            )

    def writing_began(self) -> bool:
        return current(self.run_dir) is State.WRITING

    def fail(self, detail: str) -> State:
        """After a failed install: which way it goes (claimed now if nothing was yet)."""
        held = current(self.run_dir) or claim(State.CHECK_FAILED, self.run_dir)
        write_status(self.run_dir, held, detail)
        return held


def in_live_environment() -> bool:
    return any(p.exists() for p in LIVE_MARKERS)


def reboot_to_old_os(say: Say, grace: float = REBOOT_GRACE) -> None:
    """A plain reboot: the old system's bootloader was never changed, so the firmware boots it.
    Orderly through systemd; forced through sysrq if systemd did not get there in `grace`."""
    if not in_live_environment():
        say("nestos-installer: not a NestOS live environment: not rebooting")
        return
    say("nestos-installer: rebooting into the old system")
    runner.run(["sync"], check=False, timeout=60)
    if runner.have_tool("systemctl"):
        runner.run(["systemctl", "--no-block", "reboot"], check=False, timeout=60)
        time.sleep(grace)
    say("nestos-installer: orderly reboot did not happen; forcing it")
    SYSRQ.write_text("b")


def keep_ssh_open() -> None:
    """Once writing began and failed: sshd up (under either unit name; ssh.service on Debian)
    in the live environment, where nothing stops it any more."""
    if in_live_environment() and runner.have_tool("systemctl"):
        runner.run(
            ["systemctl", "start", "--no-block", "sshd.service", "ssh.service"],
            check=False,
            timeout=60,
        )


def watch(
    config: DeadmanConfig,
    expire: Callable[[], None],
    say: Say,
    run_dir: Path = RUN_DIR,
    poll: float = 0.5,
) -> State:
    """Arm, then wait: the installer's first write disarms (returns WRITING); a failed check
    is the installer's to act on (returns CHECK_FAILED); at the deadline, claim EXPIRED and
    call `expire` (the reboot). Counted on the monotonic clock from now."""
    start = time.monotonic()
    deadline = start + config.deadline
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    armed = {"deadline": config.deadline, "pid": os.getpid()}
    (run_dir / ARMED_FILE).write_text(json.dumps(armed) + "\n")
    say(f"nestos-installer: dead-man switch armed: {config.deadline} s to the first write")
    while True:
        held = current(run_dir)
        if held is State.WRITING:
            say("nestos-installer: writing began; dead-man switch disarmed")
            return held
        if held is State.CHECK_FAILED:
            return held
        if held is State.EXPIRED or time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    held = claim(State.EXPIRED, run_dir)
    if held is State.WRITING:
        say("nestos-installer: writing began; dead-man switch disarmed")
        return held
    detail = f"no first write within {config.deadline} s"
    write_status(run_dir, State.EXPIRED, detail)
    say(banner(State.EXPIRED, detail))
    expire()
    return State.EXPIRED
