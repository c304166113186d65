"""The filters of the nestos.x2nestos collection (packaging/ansible/plugins/filter/fleet.py): a
host's outcome from x2nestos's JSON lines, and the run's summary. Loaded from the file as
Ansible loads it (the collection is no importable package of ours).
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[2]
FLEET = runpy.run_path(str(REPO / "packaging/ansible/plugins/filter/fleet.py"))
conversion = FLEET["conversion"]
fleet_summary = FLEET["fleet_summary"]
T0, T1 = "2026-12-02T01:30:00.000Z", "2026-12-02T01:30:02.500Z"


def phase(name: str, status: str = "ok", **extra: Any) -> str:
    event = {"event": "phase", "phase": name, "status": status, "start": T0, "end": T1}
    event.update(seconds=2.5, detail="d", **extra)
    return json.dumps(event)


def result(**kw: Any) -> str:
    base = {"event": "result", "host": "root@db1", "ok": False, "state": None}
    base.update({"failed-phase": None, "reason": None, "exit-code": 0, "untouched": True})
    base.update(start=T0, end=T1, seconds=2.5, phases={})
    base.update(kw)
    return json.dumps(base)


def registered(lines: List[str], rc: int, stderr: str = "") -> Dict[str, Any]:
    return {"stdout": "\n".join(lines), "stderr": stderr, "rc": rc}


def test_a_verified_conversion() -> None:
    names = ["probe", "plan", "stage", "loaded", "jumped", "live", "installing", "rebooted"]
    lines = [phase(n) for n in names + ["verified"]]
    lines.insert(6, json.dumps({"event": "log", "phase": "installing", "line": "writing"}))
    lines.append(result(ok=True, state="verified", untouched=False, seconds=431.2))
    out = conversion(registered(lines, 0))
    assert out["ok"] is True and out["state"] == "verified" and out["untouched"] is False
    assert [p["phase"] for p in out["phases"]] == names + ["verified"]  # log lines are no phase
    assert out["phases"][0] == {
        "phase": "probe",
        "status": "ok",
        "start": T0,
        "end": T1,
        "seconds": 2.5,
    }
    assert out["seconds"] == 431.2 and out["exit-code"] == 0


def test_a_blocking_check_fails_in_plan_untouched() -> None:
    reason = "kexec: not found (install: apt-get install kexec-tools)"
    lines = [phase("probe"), phase("plan", "failed", reason=reason)]
    lines.append(
        result(state="probe", **{"failed-phase": "plan", "reason": reason, "exit-code": 11})
    )
    out = conversion(registered(lines, 11, "Error: plan: kexec: not found\n"))
    assert (out["ok"], out["failed-phase"], out["reason"]) == (False, "plan", reason)
    assert out["untouched"] is True and out["exit-code"] == 11
    assert out["phases"][1]["reason"] == reason


def test_a_failure_after_the_jump_is_never_untouched() -> None:
    """Even a result that claims otherwise: once `jumped` was seen, the disk may be written."""
    lines = [phase(n) for n in ("probe", "plan", "stage", "loaded", "jumped")]
    lines.append(phase("live", "failed", reason="returned: the old host key answered"))
    lines.append(result(state="jumped", untouched=True, **{"failed-phase": "live"}))
    out = conversion(registered(lines, 15))
    assert out["untouched"] is False and out["failed-phase"] == "live"
    assert out["reason"] == "returned: the old host key answered"  # the failed phase's reason


def test_no_result_object_falls_back_to_the_error_line() -> None:
    """A usage error (exit 2) prints no JSON; noise lines on stdout are skipped."""
    out = conversion(registered(["not json", "{broken"], 2, "usage: ...\nError: --port: bad\n"))
    assert out == {
        "ok": False,
        "state": None,
        "failed-phase": None,
        "reason": "--port: bad",
        "untouched": True,
        "exit-code": 2,
        "phases": [],
    }
    killed = conversion(registered([phase("probe"), phase("plan"), phase("stage")], -9))
    assert killed["state"] == "stage" and killed["untouched"] is True
    assert killed["reason"] == "x2nestos exited -9 without a result"


def test_fleet_summary_groups_hosts_with_why() -> None:
    results = [
        {"host": "a", "outcome": "converted", "seconds": 431.2},
        {"host": "b", "outcome": "failed", "failed-phase": "plan", "reason": "kexec: no"},
        {"host": "c", "outcome": "skipped", "reason": "already runs NestOS"},
        {
            "host": "d",
            "outcome": "failed",
            "failed-phase": "live",
            "reason": "x",
            "untouched": False,
        },
        None,
    ]
    out = fleet_summary(results, ["a", "b", "c", "d", "e"])
    assert out["counts"] == {
        "converted": 1,
        "skipped": 1,
        "failed": 2,
        "not-reached": 1,
    }
    assert out["hosts"]["converted"] == [{"host": "a", "why": "verified in 431s"}]
    assert out["hosts"]["failed"][0] == {"host": "b", "why": "plan: kexec: no (untouched)"}
    assert "CHANGED" in out["hosts"]["failed"][1]["why"]
    assert out["hosts"]["not-reached"] == [{"host": "e", "why": "not reached in this run"}]
    assert (
        out["lines"][0] == "converted: 1" and "  skipped   c: already runs NestOS" in out["lines"]
    )
