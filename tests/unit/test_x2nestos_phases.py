"""The phases of x2nestos convert --json: names and exit codes as x2nestos/README.md documents
them (the interface scripts and the Ansible role read), one event per phase, the result object
(state reached, failed phase, `returned`, untouched)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from nestos_installer.errors import NestosError
from x2nestos.phases import RETURNED, Phase, PhaseFailed, Tracker

README = Path(__file__).resolve().parents[2] / "x2nestos" / "README.md"


def test_readme_table_is_the_code() -> None:
    rows = re.findall(r"^\| `([a-z]+)` \| (\d+) \|", README.read_text(), re.M)
    assert rows == [(p.value, str(p.exit_code)) for p in Phase]
    assert [p.value for p in Phase] == [
        "probe", "plan", "stage", "loaded", "jumped", "live", "installing", "rebooted", "verified",
    ]  # fmt: skip
    assert [p for p in Phase if p.touches_host][0] is Phase.JUMPED


def _run(phases: List[Phase], fail: Exception) -> List[Dict[str, Any]]:
    """Events of a conversion that passes `phases` and fails the next one with `fail`."""
    events: List[Dict[str, Any]] = []
    track = Tracker(events.append, "root@db1")
    with pytest.raises(PhaseFailed) as info:
        for p in phases:
            with track.phase(p) as step:
                step.detail = f"{p.value} done"
                track.log(f"inside {p.value}")
        with track.phase(list(Phase)[len(phases)]):
            raise fail
    events.append(track.result(track.reached(), info.value))
    json.dumps(events)  # every event is plain JSON
    return events


def test_failure_before_the_jump_leaves_the_host_untouched() -> None:
    events = _run([Phase.PROBE, Phase.PLAN], NestosError("sha256 mismatch"))
    phases = [e for e in events if e["event"] == "phase"]
    assert [(e["phase"], e["status"]) for e in phases] == [
        ("probe", "ok"), ("plan", "ok"), ("stage", "failed"),
    ]  # fmt: skip
    assert phases[-1]["reason"] == "sha256 mismatch"
    assert {"event": "log", "line": "inside plan", "phase": "plan"} in events
    result = events[-1]
    assert result["state"] == "plan" and result["failed-phase"] == "stage"
    assert result["exit-code"] == 12 and not result["ok"]
    assert result["untouched"] and not result["returned"]
    assert list(result["phases"]) == ["probe", "plan", "stage"]


def test_a_host_back_on_its_old_system_is_reported_as_returned() -> None:
    done = [Phase.PROBE, Phase.PLAN, Phase.STAGE, Phase.LOADED, Phase.JUMPED]
    events = _run(done, NestosError(f"{RETURNED}the host answered with its old host key"))
    result = events[-1]
    assert result["failed-phase"] == "live" and result["exit-code"] == Phase.LIVE.exit_code == 15
    assert result["returned"] and not result["untouched"]
    assert result["reason"].startswith("returned: ")
    assert result["state"] == "jumped"


def test_cause_chain_is_one_line() -> None:
    try:
        try:
            raise OSError("connection reset")
        except OSError as e:
            raise NestosError("copying the kernel\nto the host") from e
    except NestosError as e:
        events = _run([Phase.PROBE, Phase.PLAN], e)
    assert events[-1]["reason"] == "copying the kernel to the host: connection reset"
