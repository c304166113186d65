"""After the jump: the live environment over SSH (strictly checked against the host key x2nestos
gave it), the installer followed through its journal, then the host back on SSH with its own
carried host key, running NestOS under its old hostname.

A concept over x2nestos.ssh and phases; never prints (journal lines go to the tracker).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from nestos_installer import run as runner
from nestos_installer.deadman import GO_BACK, RUN_DIR, STATUS_FILE, STAY, VERDICT
from nestos_installer.errors import NestosError
from x2nestos.hostfacts import parse_os_release
from x2nestos.phases import RETURNED, Phase, Tracker
from x2nestos.ssh import (
    Connection,
    SshError,
    SshTarget,
    known_hosts,
    remote_command,
    wait_for_any,
    wait_for_login,
)

LIVE_ALIAS = "x2nestos-live"  # names in our own known_hosts files (HostKeyAlias)
HOST_ALIAS = "x2nestos-host"
CHECK_UNIT = "x2nestos-target-check.service"
POLL = 3.0
KEY_GRACE = 300  # seconds the host may answer with another key after the reboot
STILL_OLD = 300  # seconds the old system may still answer after the jump before it is a return
OS_RELEASE = "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release"
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # a new kernel (kexec or reboot) has a new one


@dataclass(frozen=True)
class Expect:
    """What the controller knows before the jump and checks after it."""

    target: SshTarget
    live_key: str  # the live environment's host key (`type base64 comment`)
    host_keys: Tuple[str, ...]  # the host's own public host keys, carried to NestOS
    hostname: Optional[str]  # the carried hostname; None when not carried
    installer_unit: str
    timeout: float
    old_boot_id: Optional[str] = None  # the old system's: a login into it is not a return
    # run on the old system when the host is back on it (the staged files removed)
    on_return: Optional[Callable[[Connection], object]] = None


def follow(expect: Expect, work: Path, track: Tracker) -> None:
    """LIVE, INSTALLING, REBOOTED and VERIFIED, each within `expect.timeout` seconds.

    The host's own keys are its old system's too: a login they accept where the live
    environment was expected, or a non-NestOS system after the reboot, is reported as a
    failure whose reason starts with `returned: ` (the host is back on its old system)."""
    if not expect.host_keys:
        raise NestosError("no carried host key to recognise the host by")
    live_opts = known_hosts(work / "known_hosts.live", LIVE_ALIAS, [expect.live_key])
    live = Connection(expect.target.as_user("root"), work, "live", live_opts)
    back_opts = known_hosts(work / "known_hosts.host", HOST_ALIAS, list(expect.host_keys))
    back = Connection(expect.target, work, "back", back_opts)
    try:
        with track.phase(Phase.LIVE) as step:
            step.detail = wait_live(live, back, expect)
        with track.phase(Phase.INSTALLING) as step:
            try:
                step.detail = watch_install(live, expect, track)
            except LiveFailed as e:
                live.stop()
                if e.goes_back:
                    raise returned_or(e, back, expect) from e
                raise
    finally:
        live.stop()
    try:
        with track.phase(Phase.REBOOTED) as step:
            step.detail = wait_back(back, expect)
        with track.phase(Phase.VERIFIED) as step:
            step.data = verify(back, expect)
            step.detail = f"{step.data['os']}, hostname {step.data['hostname']}"
    finally:
        back.stop()


class LiveFailed(NestosError):
    """The install failed in the live environment, or the live environment went away before
    the installer finished; `goes_back`: the dead-man switch sends the host to its old system
    (nothing was written), or it is already gone."""

    def __init__(self, message: str, goes_back: bool = True) -> None:
        super().__init__(message)
        self.goes_back = goes_back


def live_outcome(live: Connection, tail: str) -> LiveFailed:
    """What a failed install does next, from the dead-man switch's status file: back to the old
    system (nothing written; also when the file is unreadable or the live environment is
    already gone), or staying up with SSH open after writing began."""
    try:
        status = json.loads(live.text(["cat", str(RUN_DIR / STATUS_FILE)], root=False))
    except (SshError, ValueError):
        status = None
    action = status.get("action") if isinstance(status, dict) else None
    if action == GO_BACK:
        return LiveFailed(f"the install failed before writing (nothing was written): {tail}")
    if action != STAY:  # no word from the switch: watch for the old system all the same
        return LiveFailed(f"the install failed in the live environment: {tail}")
    detail = str(status.get("detail") or tail)
    return LiveFailed(
        f"the install failed after writing began ({detail}): the target was wiped; the live "
        f"environment stays up with SSH open to your key (journal: {status.get('journal')})",
        goes_back=False,
    )


def wait_live(live: Connection, back: Connection, expect: Expect) -> str:
    """Until the live environment answers with the key x2nestos gave it: a detail line. If the
    host's own key answers instead, it is its old system again (returned) or, if it already
    runs NestOS, the live environment came and went unseen: both raise. The old system still
    shutting down (its boot id unchanged) is neither: the wait goes on."""
    start = time.monotonic()
    deadline = start + expect.timeout
    while True:
        who = wait_for_any([live, back], deadline)
        if who is None:
            raise NestosError(
                f"the live environment did not answer on SSH with the live host key within "
                f"{expect.timeout:.0f}s ({live.log_tail() or 'no answer'})"
            )
        if who is live:
            return f"{live.target.name} answered with the live host key"
        try:
            still_old = expect.old_boot_id is not None and boot_id(back) == expect.old_boot_id
            release = {} if still_old else os_release(back)
            note = "" if still_old or is_nestos(release) else back_home(back, expect)
        finally:
            back.stop()
        if still_old and time.monotonic() - start < STILL_OLD:
            time.sleep(POLL)
            continue
        if still_old:
            note = back_home(back, expect)
            raise NestosError(
                f"{RETURNED}the old system still runs {STILL_OLD}s after the jump{note}"
            )
        name = release.get("PRETTY_NAME") or release.get("NAME") or "unknown"
        if not is_nestos(release):
            raise NestosError(
                f"{RETURNED}the host answered with its old host key, running {name}, "
                f"where the live environment was expected: the jump did not take{note}"
            )
        raise NestosError(f"the live environment was never seen; the host already runs {name}")


def back_home(back: Connection, expect: Expect) -> str:
    """On the host back on its old system: `expect.on_return` (which removes the staged
    files); "" or, when that failed, a note for the reason. `back` logs in if it is not."""
    if expect.on_return is None:
        return ""
    started_here = not back.started
    try:
        if started_here:
            back.start()
        expect.on_return(back)
    except NestosError as e:
        return f" (cleaning up on the old system failed: {e})"
    finally:
        if started_here:
            back.stop()
    return ""


def returned_or(error: NestosError, back: Connection, expect: Expect) -> NestosError:
    """After the live environment went away too early: `returned` if the host is back on a
    system that is not NestOS within the timeout, else `error` itself."""
    if not wait_for_login(back, time.monotonic() + expect.timeout):
        return error
    try:
        release = os_release(back)
        note = "" if is_nestos(release) else back_home(back, expect)
    finally:
        back.stop()
    if is_nestos(release):
        return error
    name = release.get("PRETTY_NAME") or release.get("NAME") or "unknown"
    return NestosError(f"{RETURNED}the host came back running {name}: {error}{note}")


def wait_back(back: Connection, expect: Expect) -> str:
    """Until the host answers with its own carried host key: a detail line. A host that keeps
    answering with another key for KEY_GRACE seconds runs without its carried keys: that
    fails at once rather than at the timeout."""
    deadline = time.monotonic() + expect.timeout
    other_since: Optional[float] = None
    while True:
        if wait_for_login(back, min(deadline, time.monotonic() + 30)):
            return f"{back.target.name} answered with its own carried host key"
        now = time.monotonic()
        other_since = (other_since or now) if back.key_refused() else None
        if other_since is not None and now - other_since > KEY_GRACE:
            raise NestosError(
                f"the host answers with a host key that is not its own for {KEY_GRACE}s: its "
                "carried host keys were not applied (did Ignition fail on the first boot? its "
                "console says)"
            )
        if now >= deadline:
            raise NestosError(
                f"the host did not answer on SSH with its own carried host key within "
                f"{expect.timeout:.0f}s ({back.log_tail() or 'no answer'})"
            )


# systemd's message ID for "a unit's start job finished" (its JOB_RESULT says how)
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"


class Journal:
    """The install's journal, followed over SSH in a thread (JSON entries): each message goes
    to the tracker; systemd's own job results say when the installer has finished."""

    def __init__(self, conn: Connection, units: List[str], track: Tracker) -> None:
        argv = ["journalctl", "--no-pager", "-f", "-n", "all", "-o", "json"]
        for u in units:
            argv += ["-u", u]
        command = remote_command(argv, sudo=False)
        self.proc = conn.spawn(command, stdout=runner.PIPE, stderr=runner.DEVNULL)
        self.lines: List[str] = []
        self.results: Dict[str, str] = {}  # unit -> JOB_RESULT of its start job
        self.track = track
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            msg = entry.get("MESSAGE")
            if isinstance(msg, list):  # journald sends non-UTF-8 messages as byte arrays
                msg = bytes(b & 0xFF for b in msg if isinstance(b, int)).decode("utf-8", "replace")
            if entry.get("MESSAGE_ID") == UNIT_STARTED and isinstance(entry.get("UNIT"), str):
                self.results[entry["UNIT"]] = str(entry.get("JOB_RESULT"))
            if isinstance(msg, str):
                line = msg.rstrip()
                self.lines.append(line)
                self.track.log(line)

    def stop(self, wait: float = 0) -> None:
        """Stop following (after up to `wait` seconds for the stream to end by itself)."""
        self.thread.join(timeout=wait)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.thread.join(timeout=10)

    def tail(self) -> str:
        return summary(self.lines)


def summary(lines: List[str], n: int = 3) -> str:
    """One line for a failure reason: the installer's own verdict (the dead-man switch's line)
    if it gave one, else the last `n` journal lines (banner rules skipped)."""
    verdict = [ln for ln in lines if ln.startswith(VERDICT)]
    if verdict:
        return verdict[-1][len(VERDICT) :].strip()
    kept = [ln for ln in lines if ln.strip("#").strip()]
    return " | ".join(kept[-n:]) or "no journal lines"


def unit_state(conn: Connection, unit: str) -> str:
    """ActiveState of a unit in the live environment."""
    text = conn.text(["systemctl", "show", "-p", "ActiveState", unit], root=False)
    return text.partition("=")[2].strip()


def watch_install(live: Connection, expect: Expect, track: Tracker) -> str:
    """Until the installer has finished (its start job done): a detail line. A failed unit,
    the live environment going away first, or the timeout raise."""
    unit = expect.installer_unit
    journal = Journal(live, [CHECK_UNIT, unit], track)
    deadline = time.monotonic() + expect.timeout
    start = time.monotonic()
    try:
        while time.monotonic() < deadline:
            try:
                states = [unit_state(live, u) for u in (CHECK_UNIT, unit)]
            except SshError:
                journal.stop(wait=10)  # the reboot after a good install can beat our poll
                if journal.results.get(unit) == "done":
                    break
                gone = "the live environment went away before the installer finished"
                raise LiveFailed(f"{gone}: {journal.tail()}") from None
            failed = [u for u, r in journal.results.items() if r != "done"]
            if "failed" in states or failed:
                raise live_outcome(live, journal.tail())
            if journal.results.get(unit) == "done":
                break
            time.sleep(POLL)
        else:
            raise NestosError(f"the installer did not finish within {expect.timeout:.0f}s")
    finally:
        journal.stop()
    return f"{unit} finished in {time.monotonic() - start:.0f}s"


def boot_id(conn: Connection, timeout: float = 120) -> str:
    """The running kernel's boot id."""
    return conn.text(["cat", BOOT_ID], timeout=timeout, root=False)


def os_release(conn: Connection) -> Dict[str, str]:
    return parse_os_release(conn.text(["sh", "-c", OS_RELEASE], root=False))


def is_nestos(release: Dict[str, str]) -> bool:
    return release.get("ID") == "nestos" or "nestos" in release.get("NAME", "").lower()


def verify(conn: Connection, expect: Expect) -> Dict[str, Optional[str]]:
    """The converted host runs NestOS under its old hostname: {os, id, hostname}."""
    rel = os_release(conn)
    hostname = conn.text(["cat", "/proc/sys/kernel/hostname"], root=False)
    name = rel.get("PRETTY_NAME") or rel.get("NAME") or "unknown"
    found: Dict[str, Optional[str]] = {"os": name, "id": rel.get("ID"), "hostname": hostname}
    if not is_nestos(rel):
        raise NestosError(f"{RETURNED}the host came back running {name}, not NestOS")
    if expect.hostname is not None and hostname != expect.hostname:
        raise NestosError(f"the host came back as {hostname!r}, not {expect.hostname!r}")
    return found
