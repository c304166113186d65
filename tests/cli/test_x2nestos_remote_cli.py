"""Black-box x2nestos --host and convert --json without a server to convert: the SSH options
checked before anything runs, a host that does not answer fails in the probe phase with exit 10
and the JSON result, a refused plan exits 11, and nothing is left behind on the controller.
(The conversion itself runs against a real server in tests/boot/test_x2nestos_remote.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host
from fixtures.hostfacts.liveartifacts import build_pxe
from helpers.capabilities import require_tools
from helpers.tools import X2NESTOS


def x2n(*args: object, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(
        [X2NESTOS, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("cpio")
    d = tmp_path_factory.mktemp("media")
    build_pxe(d / "pxe")
    (d / "user.ign").write_text(LOGIN_IGN)
    return d


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections are refused


def events(stdout: str) -> List[Dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_unreachable_host_fails_in_the_probe_phase(tmp_path: Path, media: Path) -> None:
    require_tools("ssh")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = closed_port()
    proc = x2n(
        "convert", "--host", "root@127.0.0.1", "--port", port, "--yes", "--json",
        "--pxe", media / "pxe", "--insecure", "-i", media / "user.ign",
        tmp=tmp,
    )  # fmt: skip
    assert proc.returncode == 10, proc.stderr
    phase, result = events(proc.stdout)
    assert phase["event"] == "phase" and phase["phase"] == "probe"
    assert phase["status"] == "failed" and "cannot log in to root@127.0.0.1" in str(phase["reason"])
    assert result["event"] == "result" and result["ok"] is False
    assert result["failed-phase"] == "probe" and result["exit-code"] == 10
    assert result["untouched"] is True and result["state"] is None  # no phase passed
    assert result["returned"] is False
    assert set(result) >= {"start", "end", "seconds", "phases", "host", "reason"}
    assert proc.stderr.startswith("Error: probe: cannot log in to root@127.0.0.1 over SSH")
    assert "Traceback" not in proc.stderr
    assert list(tmp.iterdir()) == []  # the private work dir (control socket, tree) is gone


def test_doctor_on_an_unreachable_host(tmp_path: Path, media: Path) -> None:
    require_tools("ssh")
    proc = x2n(
        "doctor", "--host", "127.0.0.1", "--port", closed_port(), "--pxe", media / "pxe",
        tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: cannot log in to 127.0.0.1 over SSH: ")
    assert "Connection refused" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["doctor", "--sudo"], "--sudo needs --host"),
        (["doctor", "--ssh-option", "Port=22"], "--ssh-option needs --host"),
        (["doctor", "--host=-oProxyCommand=sh"], "not a host name"),
        (["doctor", "--host", "a b@host"], "not a user name"),
        (["doctor", "--host", "h", "--port", "70000"], "--port 70000: not a TCP port"),
        (
            ["doctor", "--host", "h", "--ssh-option", "StrictHostKeyChecking=no"],
            "a conversion never accepts a changed host key",
        ),
        (["doctor", "--host", "h", "--ssh-option", "ControlPath=/tmp/x"], "manages controlpath"),
        (["--root", "/tmp", "doctor", "--host", "h"], "--root and --host exclude each other"),
        (
            ["convert", "--host", "h", "--yes", "--carry", "console,network"],
            "checks the converted host by its own host key",
        ),
        (["convert", "--host", "h"], "refusing to convert without confirmation"),
    ],
)
def test_usage_refused_before_any_connection(tmp_path: Path, args: List[str], message: str) -> None:
    proc = x2n(*args, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: ") and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_local_convert_json_phases(tmp_path: Path, media: Path) -> None:
    """convert --json here: a host that fails a check stops in the plan phase (exit 11), with
    the reason in the event and the result; nothing was staged."""
    build_host(tmp_path / "root", mem_total=256 << 20, mem_available=200 << 20)
    proc = x2n(
        "--root", tmp_path / "root", "convert", "--yes", "--json", "--pxe", media / "pxe",
        "--insecure", "-i", media / "user.ign",
        tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 11, proc.stderr
    evs = events(proc.stdout)
    logs = [e for e in evs if e["event"] == "log"]
    assert logs and all(e["phase"] == "plan" for e in logs)
    phase = next(e for e in evs if e["event"] == "phase")
    assert phase["phase"] == "plan" and phase["status"] == "failed"
    assert str(phase["reason"]).startswith("memory: too little RAM")
    result = evs[-1]
    assert result["failed-phase"] == "plan" and result["exit-code"] == 11
    assert result["untouched"] is True
    assert not (tmp_path / "root/var/lib/x2nestos").exists()


def test_doctor_json_describes_the_host(tmp_path: Path, media: Path) -> None:
    build_host(tmp_path / "root")
    proc = x2n(
        "--root", tmp_path / "root", "doctor", "--json", "--pxe", media / "pxe",
        "-i", media / "user.ign",
        tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    host = json.loads(proc.stdout)["host"]
    assert host["hostname"] == "convertme" and host["kernel"] == "6.1.0-test"
    assert host["users-with-keys"] == ["root", "alice", "carol"]
    assert host["addresses"] == {
        "ens3": ["192.0.2.10/24", "2001:db8::10/64"],
        "ens4": ["10.0.4.20/24"],
    }
    assert host["default-route"] == ["ens3"]
