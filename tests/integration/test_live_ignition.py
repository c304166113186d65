"""The demo live rootfs' /init drives Debian's real Ignition binary through its stages against a
root tree (here a temp dir, with Ignition's `file` platform): a `pxe customize` config's files,
units and presets land as Ignition writes them; a config needing the network is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers.capabilities import require
from helpers.tools import NESTOS_INSTALLER
from nestos_demo import guestconf, liveinit
from nestos_installer.live.initrd import Initrd

pytestmark = pytest.mark.root

PRE = "#!/bin/sh\necho pre\n"


def _root(tmp: Path) -> Path:
    """A root tree with what Debian's Ignition asks of one (its SELinux config)."""
    root = tmp / "root"
    (root / "etc" / "selinux").mkdir(parents=True)
    (root / "etc" / "selinux" / "config").write_text(guestconf.SELINUX_CONFIG)
    return root


def _env(config: Path) -> dict:
    # guest/os/bin/setfiles: these guests have no SELinux, labelling is a no-op
    path = f"{guestconf.GUEST / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**os.environ, "PATH": path, "IGNITION_CONFIG_FILE": str(config)}


def test_ignition_applies_a_customize_config(tmp_path: Path) -> None:
    require(
        os.geteuid() == 0 and os.access(liveinit.IGNITION, os.X_OK),
        f"needs root and Debian's ignition package ({liveinit.IGNITION})",
    )
    (tmp_path / "pre.sh").write_text(PRE)
    (tmp_path / "conf.yaml").write_text("dest-device: /dev/vda\n")
    (tmp_path / "base.img").write_bytes(b"")
    initrd = tmp_path / "custom.img"
    subprocess.run(
        [NESTOS_INSTALLER, "pxe", "customize", "--pre-install", str(tmp_path / "pre.sh"),
         "--installer-config", str(tmp_path / "conf.yaml"), "-o", str(initrd),
         str(_live_initramfs(tmp_path))],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    config = tmp_path / "config.ign"
    config.write_bytes(_member(initrd, "config.ign"))
    root, run = _root(tmp_path), tmp_path / "run"
    assert liveinit.run_ignition("file", str(root), str(run), _env(config)) is None
    conf = root / "etc/nestos/installer.d/0000-conf.yaml"
    assert conf.read_text() == "dest-device: /dev/vda\n"
    assert conf.stat().st_mode & 0o777 == 0o600
    script = root / "usr/local/bin/pre-install-pre.sh"
    assert script.read_text() == PRE and script.stat().st_mode & 0o777 == 0o700
    unit = root / "etc/systemd/system/pre-install-pre.sh.service"
    assert "RequiredBy=nestos-installer.service" in unit.read_text()
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text()
    assert "enable pre-install-pre.sh.service" in preset.splitlines()
    assert json.loads((root / "etc/.ignition-result.json").read_text())


def test_ignition_refuses_a_config_that_needs_the_network(tmp_path: Path) -> None:
    require(
        os.geteuid() == 0 and os.access(liveinit.IGNITION, os.X_OK),
        f"needs root and Debian's ignition package ({liveinit.IGNITION})",
    )
    config = tmp_path / "config.ign"
    remote = {"source": "http://192.0.2.1/x"}
    config.write_text(json.dumps({"ignition": {"version": "3.3.0", "config": {"merge": [remote]}}}))
    failed = liveinit.run_ignition(
        "file", str(_root(tmp_path)), str(tmp_path / "run"), _env(config)
    )
    assert failed is not None and "needs the network" in failed


def _live_initramfs(tmp: Path) -> Path:
    """A minimal NestOS live initramfs (the stamp files `pxe customize` looks for)."""
    src = tmp / "live"
    (src / "etc" / "nestos").mkdir(parents=True)
    (src / "etc" / "nestos-live-initramfs").write_text("")
    features = {"installer-config": True, "live-initrd-network": True}
    (src / "etc" / "nestos" / "features.json").write_text(json.dumps(features))
    names = subprocess.run(["find", "."], cwd=src, capture_output=True, check=True).stdout
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"], cwd=src, input=names, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    out = tmp / "live.img"
    out.write_bytes(cpio)
    return out


def _member(initrd: Path, name: str) -> bytes:
    got = Initrd.from_bytes(initrd.read_bytes()).get(name)
    assert got is not None, f"{name} not in {initrd}"
    return got
