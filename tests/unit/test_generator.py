"""The systemd generator (POSIX sh) and units of the live autoinstall (installer.md §3.3)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

from helpers.capabilities import require_tools
from helpers.tools import NESTOS_INSTALLER

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "packaging" / "systemd"
GENERATOR = SYSTEMD / "nestos-installer-generator"


def generate(tmp: Path, cmdline: str, config: Optional[Dict[str, str]] = None) -> Path:
    """Run the generator under dash (strict POSIX) with a fake cmdline; return its unit dir."""
    (tmp / "cmdline").write_text(cmdline + "\n")
    conf = tmp / "installer.d"
    conf.mkdir(exist_ok=True)
    for name, text in (config or {}).items():
        (conf / name).write_text(text)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NESTOS_INSTALLER_CMDLINE": str(tmp / "cmdline"),
        "NESTOS_INSTALLER_CONFIG_DIR": str(conf),
        "NESTOS_INSTALLER_REBOOT_FLAG": str(tmp / "run" / "nestos-installer-reboot"),
        "NESTOS_INSTALLER_LOG": str(tmp / "kmsg"),
    }
    units = tmp / "normal"
    shell = shutil.which("dash") or "sh"
    argv = [shell, str(GENERATOR), str(units), str(tmp / "early"), str(tmp / "late")]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # generators log to kmsg only
    return units


def test_install_dev_makes_post_target_default_and_reboots(tmp_path: Path) -> None:
    units = generate(tmp_path, "console=ttyS0 nestos.inst.install_dev=/dev/vda")
    link = units / "default.target"
    assert link.is_symlink()
    assert os.readlink(link) == "/usr/lib/systemd/system/nestos-installer-post.target"
    assert (tmp_path / "run" / "nestos-installer-reboot").exists()
    assert "nestos-installer-post.target" in (tmp_path / "kmsg").read_text()


def test_nothing_requested_does_nothing(tmp_path: Path) -> None:
    units = generate(tmp_path, "nestos.inst.install_dev_x=1 xnestos.inst.install_dev=1")
    assert not (units / "default.target").exists()
    assert not (tmp_path / "run" / "nestos-installer-reboot").exists()


def test_config_dir_alone_triggers(tmp_path: Path) -> None:
    units = generate(tmp_path, "console=ttyS0", {"10-a.yaml": "dest-device: /dev/vda\n"})
    assert (units / "default.target").is_symlink()
    assert (tmp_path / "run" / "nestos-installer-reboot").exists()


@pytest.mark.parametrize(
    ("karg", "reboot"),
    [
        ("nestos.inst.skip_reboot", False),
        ("nestos.inst.skip_reboot=1", False),
        ("nestos.inst.skip_reboot=0", True),
        ("nestos.inst.skip_reboot=off", True),
        ("nestos.inst.skip_reboot=NO", True),
        ("nestos.inst.skip_reboot=", True),
        ("nestos.inst.skip_reboot=yes nestos.inst.skip_reboot=0", True),
    ],
)
def test_skip_reboot(tmp_path: Path, karg: str, reboot: bool) -> None:
    units = generate(tmp_path, f"nestos.inst.install_dev=/dev/vda {karg} data*")
    assert (units / "default.target").is_symlink()
    assert (tmp_path / "run" / "nestos-installer-reboot").exists() is reboot


def test_disable_device_auto_activation_is_idempotent(tmp_path: Path) -> None:
    script = SYSTEMD / "nestos-installer-disable-device-auto-activation"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NESTOS_INSTALLER_ROOT": str(tmp_path)}
    (tmp_path / "etc" / "lvm").mkdir(parents=True)
    (tmp_path / "etc" / "lvm" / "lvm.conf").write_text("global { }\n")
    for _ in range(2):
        subprocess.run(["sh", str(script)], env=env, check=True, timeout=30)
    md = (tmp_path / "etc" / "mdadm.conf.d" / "nestos-installer.conf").read_text()
    assert "AUTO -all" in md.splitlines()
    lvm = (tmp_path / "etc" / "lvm" / "lvm.conf").read_text()
    assert lvm.startswith("global { }\n")
    assert lvm.count('devices { filter = [ "r|.*|" ] }') == 1


def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify, with our own commands pointed at the repo copies."""
    require_tools("systemd-analyze")
    exe = Path(NESTOS_INSTALLER)
    names = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".target"))
    assert "nestos-installer.service" in names and "nestos-installer-post.target" in names
    for name in names:
        text = (SYSTEMD / name).read_text()
        text = text.replace("/usr/libexec/", f"{SYSTEMD}/").replace(
            "/usr/bin/nestos-installer", str(exe)
        )
        (tmp_path / name).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_post_target_graph() -> None:
    post = (SYSTEMD / "nestos-installer-post.target").read_text()
    for unit in (
        "nestos-installer.target",
        "nestos-installer-reboot.service",
        "nestos-installer-noreboot.service",
        "nestos-installer-secure-ipl-reboot.service",
    ):
        assert f"Requires={unit}" in post
    service = (SYSTEMD / "nestos-installer.service").read_text()
    assert "OnFailure=emergency.target" in service
    assert "ConditionKernelCommandLine=|nestos.inst.install_dev" in service
    assert "network-online.target" not in service  # 0.21+: don't require the network
    assert "Wants=sshd.service" in (SYSTEMD / "nestos-installer-noreboot.service").read_text()


def test_live_init_reads_kargs_and_moves_keyfiles(tmp_path: Path) -> None:
    """The live rootfs' /init: Ignition only with ignition.firstboot (its platform from the
    karg); embedded keyfiles land in NetworkManager's profiles with mode 0600."""
    from nestos_demo import liveinit

    args = liveinit.kernel_args(
        "console=ttyS0 ignition.firstboot ignition.platform.id=qemu x=1 x=2"
    )
    assert "ignition.firstboot" in args and args["ignition.platform.id"] == "qemu"
    assert args["x"] == "2"
    argv = liveinit.ignition_argv("files", "metal", "/r", "/tmp/run")
    assert argv[0] == liveinit.IGNITION and "--stage=files" in argv and "--root=/r" in argv
    assert "--config-cache=/tmp/run/ignition.json" in argv
    src = tmp_path / "etc" / "nestos-firstboot-network"
    src.mkdir(parents=True)
    (src / "a.nmconnection").write_text("[connection]\nid=a\n")
    (src / "sub").mkdir()  # not a keyfile
    dest = tmp_path / "nm"
    assert liveinit.copy_network_keyfiles([src, tmp_path / "absent"], dest) == ["a.nmconnection"]
    assert (dest / "a.nmconnection").stat().st_mode & 0o777 == 0o600
    assert (dest / "a.nmconnection").read_text() == "[connection]\nid=a\n"
