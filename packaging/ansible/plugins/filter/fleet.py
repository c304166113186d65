"""Filters of the nestos.x2nestos collection: one host's outcome from the JSON lines of
`x2nestos convert --host --json` (conversion), and the run's summary (fleet_summary).

Runs inside Ansible on the controller: stdlib only; imports nothing of nestos-installer.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

JUMPED = "jumped"  # the phase after which the host's disk may have been written


def _events(stdout: str) -> List[Dict[str, Any]]:
    """The JSON objects among the output lines (anything else is skipped)."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "event" in obj:
            out.append(obj)
    return out


def _error_line(stderr: str) -> Optional[str]:
    """The `Error: ...` line x2nestos prints (else the last line), without the prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Error:"):
            return ln[len("Error:") :].strip()
    return lines[-1] if lines else None


def conversion(registered: Dict[str, Any]) -> Dict[str, Any]:
    """The outcome of one `x2nestos convert` run, from its registered command result: ok,
    state, failed-phase, reason, untouched, exit-code, phases (each with status and times)."""
    events = _events(registered.get("stdout") or "")
    phases = [
        {k: e[k] for k in ("phase", "status", "start", "end", "seconds", "reason") if k in e}
        for e in events
        if e.get("event") == "phase"
    ]
    result = next((e for e in reversed(events) if e.get("event") == "result"), None)
    rc = registered.get("rc")
    jumped = any(p["phase"] == JUMPED and p["status"] == "ok" for p in phases)
    failed = next((p for p in phases if p["status"] != "ok"), None)
    why = (failed or {}).get("reason") or _error_line(registered.get("stderr") or "")
    if result is None:  # x2nestos stopped outside any phase (usage error, crash)
        return {
            "ok": False,
            "state": next((p["phase"] for p in reversed(phases) if p["status"] == "ok"), None),
            "failed-phase": failed["phase"] if failed else None,
            "reason": why or f"x2nestos exited {rc} without a result",
            "untouched": not jumped,
            "exit-code": rc,
            "phases": phases,
        }
    ok = bool(result.get("ok")) and rc == 0
    return {
        "ok": ok,
        "state": result.get("state"),
        "failed-phase": result.get("failed-phase"),
        "reason": result.get("reason") or (None if ok else why or f"x2nestos exited {rc}"),
        # the result's own word, but never "untouched" once the jump was seen
        "untouched": bool(result.get("untouched", not jumped)) and not jumped,
        "returned": bool(result.get("returned")),  # back on its old system: not converted
        "exit-code": result.get("exit-code", rc),
        "start": result.get("start"),
        "end": result.get("end"),
        "seconds": result.get("seconds"),
        "phases": phases,
    }


def _line(rec: Dict[str, Any]) -> str:
    """Why, in one line, for the summary."""
    if rec.get("outcome") == "converted":
        return f"verified in {rec.get('seconds') or 0:.0f}s"
    if rec.get("outcome") == "failed":
        where = rec.get("failed-phase") or "before any phase"
        left = "untouched" if rec.get("untouched", True) else "CHANGED, not retried blindly"
        return f"{where}: {rec.get('reason')} ({left})"
    return str(rec.get("reason") or "")


def fleet_summary(results: List[Optional[Dict[str, Any]]], hosts: List[str]) -> Dict[str, Any]:
    """The run's summary: per outcome, each host and why; hosts without a result this run
    (a later batch, or the run stopped before them) are `not-reached`."""
    by_host = {r["host"]: r for r in results if r}
    groups: Dict[str, List[Dict[str, str]]] = {
        k: [] for k in ("converted", "skipped", "failed", "refused", "planned", "blocked")
    }
    groups["not-reached"] = []
    for host in hosts:
        rec = by_host.get(host)
        if rec is None:
            groups["not-reached"].append({"host": host, "why": "not reached in this run"})
            continue
        groups.setdefault(rec["outcome"], []).append({"host": host, "why": _line(rec)})
    counts = {k: len(v) for k, v in groups.items() if v}
    lines = [f"{k}: {n}" for k, n in counts.items()]
    for k, v in groups.items():
        lines += [f"  {k:9} {e['host']}: {e['why']}" for e in v]
    return {"counts": counts, "hosts": {k: v for k, v in groups.items() if v}, "lines": lines}


class FilterModule:
    """nestos.x2nestos.conversion and nestos.x2nestos.fleet_summary."""

    def filters(self) -> Dict[str, Any]:
        return {"conversion": conversion, "fleet_summary": fleet_summary}
