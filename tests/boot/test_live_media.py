"""Customized live media boot under QEMU (TCG): the demo ISO after `iso ignition embed` +
`iso network embed` + `iso kargs modify` (BIOS and UEFI), and the PXE kernel with a
`pxe customize`d initramfs; each guest prints the embedded config and kargs on the serial console.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess

import pytest

from helpers.capabilities import require_qemu
from helpers.images import Artifacts, boot, demo_artifacts  # noqa: F401
from helpers.tools import NESTOS_INSTALLER

pytestmark = [pytest.mark.vm, pytest.mark.slow]

NI = NESTOS_INSTALLER
CONFIG = b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/live-media"}]}}\n'
KEYFILE = b"[connection]\nid=live-media-test\ntype=ethernet\n"


def ni(*args):
    p = subprocess.run([NI, *map(str, args)], capture_output=True, check=False)
    assert p.returncode == 0, (args, p.stderr.decode())
    return p


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_customized_iso_boots(demo_artifacts: Artifacts, tmp_path, firmware):  # noqa: F811
    require_qemu()
    iso = tmp_path / "live.iso"
    shutil.copyfile(demo_artifacts.iso, iso)
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(CONFIG)
    key = tmp_path / "live-media.nmconnection"
    key.write_bytes(KEYFILE)
    ni("iso", "ignition", "embed", "-i", cfg, iso)
    ni("iso", "network", "embed", "-k", key, iso)
    ni("iso", "kargs", "modify", "-a", "live.media.karg=1", "-d", "panic=1", "-a", "panic=2", iso)
    result = boot(iso, firmware=firmware, kind="cdrom", timeout=240)
    assert result.ok, result.describe()
    f = result.fields()
    cmdline = f["cmdline"].split()
    assert "live.media.karg=1" in cmdline and "panic=2" in cmdline and "panic=1" not in cmdline
    assert f"nestos.liveiso={demo_artifacts.volume_id}" in cmdline
    assert not any("#" in arg for arg in cmdline)
    assert f["config_ign"].encode() + b"\n" == CONFIG
    assert f["network_file:live-media.nmconnection"].encode() + b"\n" == KEYFILE


def test_pxe_customized_initramfs_boots(demo_artifacts: Artifacts, tmp_path):  # noqa: F811
    require_qemu()
    live = tmp_path / "live.ign"
    live.write_bytes(CONFIG)
    key = tmp_path / "pxe-test.nmconnection"
    key.write_bytes(KEYFILE)
    out = tmp_path / "initramfs.img"
    ni(
        "pxe",
        "customize",
        "--live-ignition",
        live,
        "--network-keyfile",
        key,
        "-o",
        out,
        demo_artifacts.pxe_initramfs,
    )
    result = boot(
        None,
        kind="kernel",
        kernel=demo_artifacts.pxe_kernel,
        initrd=[out, demo_artifacts.pxe_rootfs],
        append="console=ttyS0,115200n8 panic=1 ignition.firstboot "
        "ignition.platform.id=metal pxe.media.karg=1",
        timeout=240,
    )
    assert result.ok, result.describe()
    f = result.fields()
    assert "pxe.media.karg=1" in f["cmdline"].split()
    cfg = json.loads(f["config_ign"])
    assert cfg["ignition"]["version"] == "3.3.0"
    (merged,) = cfg["ignition"]["config"]["merge"]
    src = merged["source"].split(",", 1)[1]
    assert gzip.decompress(base64.b64decode(src)) == CONFIG
    assert f["network_file:pxe-test.nmconnection"].encode() + b"\n" == KEYFILE
    assert f["rootfs"] == "initrd"
