"""x2nestos and the dead-man switch (issue 17 item 4) on fake host roots: `--deadline`, panic= on
the live command line, what the appended archive carries to arm the switch, and the plan's
fixed section (text and JSON) on which failures return to the old OS and which stay."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, GiB, build_host
from fixtures.hostfacts.liveartifacts import build_pxe
from helpers.capabilities import require_tools
from helpers.tools import X2NESTOS
from nestos_installer.deadman import DeadmanConfig, TargetIdentity
from nestos_installer.errors import UsageError
from x2nestos import deadman
from x2nestos.plan import ConvertConfig, build_plan


def x2n(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [X2NESTOS, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def pxe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("cpio")
    d = tmp_path_factory.mktemp("pxe")
    build_pxe(d)
    (d / "user.ign").write_text(LOGIN_IGN)
    return d


@pytest.mark.parametrize(
    "text,seconds", [("600", 600), ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert deadman.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m10", "5", "25h", "1m-1"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        deadman.parse_duration(text)


def test_plan_json_and_archive(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path, disk_size=20 * GiB)
    cfg = ConvertConfig(
        root=tmp_path, pxe=pxe, insecure=True, ignition_file=pxe / "user.ign", deadline=120
    )
    plan = build_plan(cfg)
    assert plan.ok
    assert "panic=10" in plan.cmdline.split()
    d = plan.to_json()
    assert d["on-failure"]["deadline-seconds"] == 120
    assert any("deadline" in x for x in d["on-failure"]["reboot-to-old-os"])
    assert any("writing has begun" in x for x in d["on-failure"]["stay-in-live-environment"])
    assert d["on-failure"]["status-file"] == "/run/nestos-installer/status.json"
    assert plan.payload is not None
    files = {m.path: m for m in plan.payload.members()}
    live = DeadmanConfig.from_dict(json.loads(files["etc/nestos/deadman.json"].data))
    assert live == DeadmanConfig(
        deadline=120,
        target=TargetIdentity("/dev/disk/by-id/virtio-x2n-test-disk", 20 * GiB, "x2n-test-disk"),
    )
    arm = files["etc/systemd/system/sysinit.target.d/10-x2nestos-deadman.conf"].data.decode()
    assert "Wants=nestos-installer-deadman.service" in arm
    ign_paths = {f["path"] for f in plan.payload.live_ignition()["storage"]["files"]}
    assert {"/etc/nestos/deadman.json", "/" + deadman.ARM_DROPIN} <= ign_paths


def test_user_panic_karg_wins(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    cfg = ConvertConfig(
        root=tmp_path,
        pxe=pxe,
        insecure=True,
        ignition_file=pxe / "user.ign",
        live_kargs=("panic=30",),
    )
    words = build_plan(cfg).cmdline.split()
    assert "panic=30" in words and "panic=10" not in words


def test_plan_text_and_deadline_flag(tmp_path: Path, pxe: Path) -> None:
    build_host(tmp_path)
    common = ("--root", tmp_path, "plan", "--pxe", pxe, "--insecure", "-i", pxe / "user.ign")
    out = x2n(*common, "--deadline", "5m").stdout
    section = out.split("== if the live environment fails", 1)[1]
    assert "no first write within 300 s, reboots into the old system" in section
    assert "Once writing has begun, it does not go back" in section
    assert "/run/nestos-installer/status.json" in section
    d = json.loads(x2n(*common, "--json", "--deadline", "90s").stdout)
    assert d["on-failure"]["deadline-seconds"] == 90
    bad = x2n(*common, "--deadline", "10 minutes", check=False)
    assert bad.returncode == 2 and "invalid --deadline" in bad.stderr
