"""The phases of a conversion (probe ... verified), their exit codes, and the tracker that times
them and reports each as one JSON-able event: the interface scripts and Ansible read.

Never prints: events go to the `emit` callback the CLI gives. stdlib + errors only.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

from nestos_installer.errors import NestosError


class Phase(enum.Enum):
    """In order. A failure in a phase exits with its code; before JUMPED the host is untouched."""

    PROBE = "probe"  # SSH login, the host's files and facts read
    PLAN = "plan"  # checks, artifacts verified, what the live system receives
    STAGE = "stage"  # kernel and initrd copied to the host, sha256 checked there
    LOADED = "loaded"  # kexec -l done, /sys/kernel/kexec_loaded is 1
    JUMPED = "jumped"  # the host left its old system for the live environment
    LIVE = "live"  # the live environment answers on SSH with the key x2nestos gave it
    INSTALLING = "installing"  # the installer ran to its end in the live environment
    REBOOTED = "rebooted"  # the host answers on SSH with its own (carried) host key
    VERIFIED = "verified"  # it runs NestOS under its old hostname

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]

    @property
    def touches_host(self) -> bool:
        """Whether a failure in this phase can leave the host changed (the jump happened)."""
        return list(Phase).index(self) >= list(Phase).index(Phase.JUMPED)


EXIT_CODES = {p: 10 + i for i, p in enumerate(Phase)}
# how a failure reason starts when the host came back on its OLD system (no conversion)
RETURNED = "returned: "


class PhaseFailed(NestosError):
    """A phase failed; the exit code names it (see x2nestos/README.md)."""

    def __init__(self, phase: Phase, reason: str, *, hint: Optional[str] = None) -> None:
        super().__init__(f"{phase.value}: {reason}", hint=hint)
        self.phase = phase
        self.reason = reason
        self.exit_code = phase.exit_code


def _iso(t: float) -> str:
    stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Done:
    """One finished phase: what the events and the result report."""

    phase: Phase
    start: float
    end: float
    ok: bool
    detail: str = ""
    reason: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return round(self.end - self.start, 3)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "event": "phase",
            "phase": self.phase.value,
            "status": "ok" if self.ok else "failed",
            "start": _iso(self.start),
            "end": _iso(self.end),
            "seconds": self.seconds,
        }
        if self.detail:
            out["detail"] = self.detail
        if self.reason is not None:
            out["reason"] = self.reason
        out.update(self.data)
        return out


@dataclass
class Step:
    """Handed to the body of a phase: what it found, for its event."""

    detail: str = ""
    data: Dict[str, Any] = field(default_factory=dict)


Emit = Callable[[Dict[str, Any]], None]


class Tracker:
    """Times each phase and emits one event when it ends; `log` events in between."""

    def __init__(self, emit: Emit, host: str) -> None:
        self.emit = emit
        self.host = host
        self.started = time.time()
        self.done: List[Done] = []
        self.current: Optional[Phase] = None
        self._lock = threading.Lock()  # journal lines arrive from a thread

    @contextlib.contextmanager
    def phase(self, phase: Phase) -> Iterator[Step]:
        """Run one phase: an error inside becomes PhaseFailed(phase) after its event."""
        step = Step()
        start = time.time()
        self.current = phase
        try:
            yield step
        except PhaseFailed as e:
            self._end(Done(e.phase, start, time.time(), False, step.detail, e.reason, step.data))
            raise
        except (NestosError, OSError) as e:
            reason = _reason(e)
            self._end(Done(phase, start, time.time(), False, step.detail, reason, step.data))
            raise PhaseFailed(phase, reason, hint=getattr(e, "hint", None)) from e
        except BaseException:
            self._end(Done(phase, start, time.time(), False, step.detail, "interrupted", step.data))
            raise
        self._end(Done(phase, start, time.time(), True, step.detail, None, step.data))

    def _end(self, done: Done) -> None:
        with self._lock:
            self.done.append(done)
            self.current = None
            self.emit(done.to_json())

    def log(self, line: str) -> None:
        with self._lock:
            event: Dict[str, Any] = {"event": "log", "line": line}
            if self.current is not None:
                event["phase"] = self.current.value
            self.emit(event)

    def reached(self) -> Optional[Phase]:
        """The last phase that finished ok (None before the first)."""
        ok = [d.phase for d in self.done if d.ok]
        return ok[-1] if ok else None

    def result(
        self, state: Optional[Phase], error: Optional[BaseException] = None
    ) -> Dict[str, Any]:
        """The final object: where the conversion got to, why it stopped, each phase's time."""
        failed = next((d for d in self.done if not d.ok), None)
        code = 0 if error is None else int(getattr(error, "exit_code", 1))
        touched = any(d.phase is Phase.JUMPED and d.ok for d in self.done)
        reason = failed.reason if failed else (_reason(error) if error else None)
        return {
            "event": "result",
            "host": self.host,
            "ok": error is None,
            "state": state.value if state is not None else None,
            "failed-phase": failed.phase.value if failed else None,
            "reason": reason,
            "returned": bool(reason and reason.startswith(RETURNED)),
            "exit-code": code,
            "untouched": not touched,
            "start": _iso(self.started),
            "end": _iso(time.time()),
            "seconds": round(time.time() - self.started, 3),
            "phases": {d.phase.value: d.seconds for d in self.done},
        }


def _reason(e: BaseException) -> str:
    """One line: the error and its causes (`a: b: c`), as the report would show them."""
    parts = [str(e) or type(e).__name__]
    cur = e.__cause__
    while cur is not None and len(parts) < 5:
        text = str(cur) or type(cur).__name__
        if text not in parts[-1]:
            parts.append(text)
        cur = cur.__cause__
    return ": ".join(parts).replace("\n", " ")
