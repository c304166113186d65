"""The dead-man switch of issue 17 item 4: its config, the one claim between the first write and
the way back, the watcher as a real process with a short deadline, and `autoinstall` under the
switch deciding between "reboot into the old system" and "stay up". A test hook command stands
in for the reboot (and the switch never reboots outside a NestOS live environment anyway).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import List

import pytest

from helpers.tools import NESTOS_INSTALLER
from nestos_installer import deadman
from nestos_installer.deadman import DeadmanConfig, Guard, State, TargetIdentity
from nestos_installer.errors import ConfigError, InstallFailed


def _config(path: Path, **kw: object) -> Path:
    path.write_text(json.dumps({"deadline": 600, **kw}))
    return path


def test_config_roundtrip_and_validation(tmp_path: Path) -> None:
    cfg = DeadmanConfig(30, TargetIdentity("/dev/disk/by-id/virtio-x", 8 << 30, "x"), 1 << 28, 3)
    assert DeadmanConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert DeadmanConfig.load(tmp_path / "none.json") is None
    for bad in ({"deadline": 0}, {"deadline": "10m"}, {"target": {"size": 1}}, {"dead": 1}):
        with pytest.raises(ConfigError):
            DeadmanConfig.from_dict(bad)
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        DeadmanConfig.load(tmp_path / "x.json")


def test_claim_is_exclusive(tmp_path: Path) -> None:
    assert deadman.current(tmp_path) is None
    assert deadman.claim(State.EXPIRED, tmp_path) is State.EXPIRED
    assert deadman.claim(State.WRITING, tmp_path) is State.EXPIRED  # too late to write
    guard = Guard(DeadmanConfig(), tmp_path)
    with pytest.raises(InstallFailed, match="go back"):
        guard.begin_write()
    assert not guard.writing_began()


def test_guard_after_writing_began_stays(tmp_path: Path) -> None:
    guard = Guard(DeadmanConfig(), tmp_path)
    guard.begin_write()
    assert guard.writing_began()
    assert deadman.claim(State.EXPIRED, tmp_path) is State.WRITING  # the watcher lost
    assert guard.fail("write error") is State.WRITING
    status = json.loads((tmp_path / deadman.STATUS_FILE).read_text())
    assert status["action"] == "stay-in-live-environment" and status["writing-began"]
    assert "staying in the live environment with SSH open" in deadman.banner(State.WRITING, "x")


def _watch(config: Path, run_dir: Path, marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            NESTOS_INSTALLER,
            "deadman-watch",
            "--config",
            str(config),
            "--run-dir",
            str(run_dir),
            "--reboot-command",
            f"touch {marker}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_watcher_reboots_at_the_deadline(tmp_path: Path) -> None:
    """No first write within 2 s: the watcher claims EXPIRED, says so, and reboots."""
    marker = tmp_path / "rebooted"
    start = time.monotonic()
    proc = _watch(_config(tmp_path / "d.json", deadline=2), tmp_path / "run", marker)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 0, out
    assert marker.exists(), out
    assert 2 <= took < 30, took
    assert "armed: 2 s" in out and "no first write within 2 s" in out
    assert "rebooting into the old system" in out
    assert deadman.current(tmp_path / "run") is State.EXPIRED
    status = json.loads((tmp_path / "run" / deadman.STATUS_FILE).read_text())
    assert status["state"] == "expired" and status["action"] == "reboot-to-old-os"


def test_watcher_disarmed_by_the_first_write(tmp_path: Path) -> None:
    marker = tmp_path / "rebooted"
    run = tmp_path / "run"
    proc = _watch(_config(tmp_path / "d.json", deadline=30), run, marker)
    for _ in range(200):  # until armed
        if (run / deadman.ARMED_FILE).exists():
            break
        time.sleep(0.1)
    Guard(DeadmanConfig(), run).begin_write()  # what install does before its first write
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "disarmed" in out, out
    assert not marker.exists()
    assert deadman.current(run) is State.WRITING


def _autoinstall_argv(tmp_path: Path, config: Path, run: Path, marker: Path) -> List[str]:
    (tmp_path / "cmdline").write_text("console=ttyS0\n")
    conf_dir = tmp_path / "installer.d"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "0000-x2nestos.yaml").write_text(
        'dest-device: "/dev/disk/by-id/virtio-nothing"\nimage-url: "http://127.0.0.1:9/x.raw"\n'
    )
    return [
        NESTOS_INSTALLER, "autoinstall", "--cmdline", str(tmp_path / "cmdline"),
        "--config-dir", str(conf_dir), "--config", str(config),
        "--run-dir", str(run), "--reboot-command", f"touch {marker}",
    ]  # fmt: skip


def _autoinstall(tmp_path: Path, run: Path, marker: Path, **deadman_cfg: object) -> str:
    config = _config(tmp_path / "d.json", **deadman_cfg)
    argv = _autoinstall_argv(tmp_path, config, run, marker)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_autoinstall_check_failure_goes_back(tmp_path: Path) -> None:
    """A failed pre-write check (too little memory) claims CHECK_FAILED and reboots."""
    run, marker = tmp_path / "run", tmp_path / "rebooted"
    out = _autoinstall(tmp_path, run, marker, **{"min-memory": 1 << 50})
    assert "not enough memory" in out and "NOTHING WAS WRITTEN" in out, out
    assert "--fetch-retries 5" in out  # bounded retries under the switch
    assert marker.exists()
    assert deadman.current(run) is State.CHECK_FAILED
    status = json.loads((run / deadman.STATUS_FILE).read_text())
    assert status["action"] == "reboot-to-old-os" and "not enough memory" in status["detail"]


def test_autoinstall_after_writing_began_stays(tmp_path: Path) -> None:
    """Once the write was claimed, a failure stays in the live environment and says so."""
    run, marker = tmp_path / "run", tmp_path / "rebooted"
    deadman.claim(State.WRITING, run)
    out = _autoinstall(tmp_path, run, marker, **{"min-memory": 1 << 50})
    assert "staying in the live environment with SSH open" in out, out
    assert not marker.exists()
    status = json.loads((run / deadman.STATUS_FILE).read_text())
    assert status["action"] == "stay-in-live-environment"


def test_unreadable_config_still_goes_back(tmp_path: Path) -> None:
    """A switch was asked for (the file exists) but cannot be read: autoinstall goes back at
    once and the watcher keeps the default deadline rather than disarming."""
    run, marker, config = tmp_path / "run", tmp_path / "rebooted", tmp_path / "d.json"
    config.write_text("{broken")
    argv = _autoinstall_argv(tmp_path, config, run, marker)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "not JSON" in proc.stderr, proc.stderr
    assert marker.exists() and deadman.current(run) is State.CHECK_FAILED
    watcher = _watch(config, tmp_path / "run2", tmp_path / "never")
    time.sleep(3)
    assert watcher.poll() is None  # armed with the default deadline, not gone
    watcher.kill()
    out, _ = watcher.communicate(timeout=30)
    assert "using the default deadline of 600 s" in out, out
