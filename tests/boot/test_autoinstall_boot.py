"""Live autoinstall under QEMU (TCG): a PXE-style boot of the systemd live rootfs installs the
disk from nestos.inst.* kargs + a `pxe customize` config and reboots; the disk then boots
alone. Also the failure path. Each boot's wall time is printed (pytest -rP).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from helpers.capabilities import have, require, require_qemu, require_tools
from helpers.images import Artifacts, boot, demo_artifacts  # noqa: F401
from helpers.tools import NESTOS_INSTALLER
from nestos_demo import liveroot
from nestos_demo.qemu import Disk, qemu_argv

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root]

MiB = 1 << 20
DISK_SIZE = 512 * MiB
DATA_START = 256 * MiB  # a user `data` partition behind the image's partitions
DATA_SIZE = 16 * MiB
LIVE_TIMEOUT = 420  # ~90 s under TCG alone; generous for two boots sharing 2 cores
FAILED = "INSTALL FAILED"
EMERGENCY = "You are in emergency mode"


@dataclass(frozen=True)
class LiveRun:
    serial: str
    seconds: float
    exited: bool  # QEMU exited by itself (guest rebooted or powered off under -no-reboot)


@pytest.fixture(scope="session")
def live_rootfs() -> Path:
    require(
        os.geteuid() == 0 and have("mmdebstrap", "cpio", "zstd"),
        "needs root, mmdebstrap, cpio and zstd to build the live rootfs",
    )
    return liveroot.build_live_rootfs()


@pytest.fixture(scope="session")
def offline_cpio(demo_artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The signed metal image baked into the PXE rootfs (the offline image source)."""
    out = tmp_path_factory.mktemp("offline") / "offline.cpio.gz"
    a = demo_artifacts
    return liveroot.offline_image_cpio(a.raw_xz, a.raw_xz_sig, a.public_key, out)


def _config_cpio(directory: Path, files: dict[str, str]) -> Path:
    """An initrd overlay adding /etc/nestos/installer.d files (as `pxe customize` would)."""
    root = directory / "overlay"
    conf = root / "etc" / "nestos" / "installer.d"
    conf.mkdir(parents=True, mode=0o700)
    for name, text in files.items():
        (conf / name).write_text(text)
        (conf / name).chmod(0o600)
    out = directory / "config.cpio.gz"
    liveroot.pack_cpio(root, out, compressor=("gzip", "-1", "-n"))
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A 127.0.0.1 HTTP server; the guest reaches it only as http://10.0.2.100/."""
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def live_boot(
    kernel: Path,
    initrds: Sequence[Path],
    append: str,
    disk: Path,
    port: int,
    stop_when: Sequence[str] = (),
) -> LiveRun:
    """Boot the live rootfs; return when QEMU exits, or when all of `stop_when` were printed."""
    with tempfile.TemporaryDirectory(prefix="nestos-autoinstall-") as tmp:
        log = Path(tmp) / "serial.log"
        log.write_bytes(b"")
        argv = qemu_argv(
            None,
            firmware="bios",
            kind="kernel",
            serial_log=log,
            vars_file=Path(tmp) / "v.fd",
            kernel=kernel,
            initrd=list(initrds),
            append=append,
            extra_disks=[Disk(disk, snapshot=False)],
            memory=2048,
            snapshot=False,
            net_forward_port=port,
            extra_args=[],
        )
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        exited = False
        try:
            while time.monotonic() - start < LIVE_TIMEOUT:
                if proc.poll() is not None:
                    exited = True
                    break
                text = log.read_bytes().decode(errors="replace")
                if stop_when and all(s in text for s in stop_when):
                    time.sleep(3)  # long enough to see a reboot that should not come
                    exited = proc.poll() is not None
                    break
                time.sleep(1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait()
        text = log.read_bytes().decode(errors="replace").replace("\r", "")
        return LiveRun(text, time.monotonic() - start, exited)


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _blank_disk_with_data(path: Path, art: Artifacts, with_data: bool) -> None:
    """The pristine image on a 512 MiB disk (+ a `data` partition holding a file)."""
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    with open(art.raw, "rb") as src, open(path, "r+b") as dst:
        shutil.copyfileobj(src, dst, 4 * MiB)
    subprocess.run(["sgdisk", "-e", str(path)], check=True, capture_output=True, timeout=60)
    if not with_data:
        return
    first, last = DATA_START // 512, (DATA_START + DATA_SIZE) // 512 - 1
    subprocess.run(
        ["sgdisk", "-n", f"5:{first}:{last}", "-c", "5:data", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        (tree / "keep.txt").write_text("precious user data\n")
        fs = Path(tmp) / "data.img"
        subprocess.run(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                "data",
                "-d",
                str(tree),
                str(fs),
                str(DATA_SIZE // 1024),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        with open(fs, "rb") as src, open(path, "r+b") as dst:
            dst.seek(DATA_START)
            shutil.copyfileobj(src, dst, 4 * MiB)


def _partitions(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (first byte, size) from `sfdisk --json` on the disk image."""
    out = subprocess.run(
        ["sfdisk", "--json", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0:
        return {}
    table = json.loads(out.stdout)["partitiontable"]
    return {p.get("name", ""): (p["start"] * 512, p["size"] * 512) for p in table["partitions"]}


def _read_data_file(disk: Path, start: int, size: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        fs = Path(tmp) / "data.img"
        with open(disk, "rb") as src, open(fs, "wb") as dst:
            src.seek(start)
            dst.write(src.read(size))
        out = subprocess.run(
            ["debugfs", "-R", "cat /keep.txt", str(fs)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout


def _pxe_customize(live_rootfs: Path, out: Path, dest_karg: str) -> Path:
    """`pxe customize --dest-karg-append` of the live rootfs initramfs into `out`."""
    argv = [NESTOS_INSTALLER, "pxe", "customize", "--dest-karg-append", dest_karg, "-o", str(out)]
    subprocess.run([*argv, str(live_rootfs)], check=True, capture_output=True, timeout=300)
    return out


def test_pxe_autoinstall_then_disk_boots(
    demo_artifacts: Artifacts,  # noqa: F811
    live_rootfs: Path,
    offline_cpio: Path,
    http_dir: tuple[Path, int],
    tmp_path: Path,
) -> None:
    """`pxe customize`d initramfs + nestos.inst.* kargs: offline image, Ignition over HTTP,
    save_partlabel=data*, network kargs forwarded; then the disk boots alone (BIOS)."""
    require_qemu()
    require_tools("sgdisk", "sfdisk", "mke2fs", "debugfs")
    served, port = http_dir
    shutil.copy(demo_artifacts.ignition, served / "cfg.ign")
    custom = _pxe_customize(live_rootfs, tmp_path / "custom.img", "nestos.test=customized")
    disk = tmp_path / "disk.img"
    _blank_disk_with_data(disk, demo_artifacts, with_data=True)
    # no rdinit=: /init runs Ignition on the customize config (installer.d), then systemd;
    # Ignition needs the kargs `pxe customize` asks for
    append = (
        "console=ttyS0,115200n8 panic=1 ignition.firstboot ignition.platform.id=metal "
        "nestos.inst.install_dev=/dev/vda nestos.inst.ignition_url=http://10.0.2.100/cfg.ign "
        "nestos.inst.save_partlabel=data* ip=dhcp"
    )
    run = live_boot(demo_artifacts.pxe_kernel, [custom, offline_cpio], append, disk, port)
    (tmp_path / "live-serial.log").write_text(run.serial)
    print(f"live autoinstall boot: {run.seconds:.1f}s")
    assert run.exited, f"live system did not reboot after {run.seconds:.0f}s:\n{_tail(run.serial)}"
    assert 'writing file "/etc/nestos/installer.d/0000-customize.yaml"' in run.serial
    expected = (
        "nestos-installer install --config-file /etc/nestos/installer.d/0000-customize.yaml "
        "/dev/vda --ignition-url http://10.0.2.100/cfg.ign --insecure-ignition"
    )
    assert expected in run.serial, _tail(run.serial)
    assert "--image-file /usr/share/nestos-installer/metal/" in run.serial
    assert "nestos-installer: install complete." in run.serial, _tail(run.serial)
    assert FAILED not in run.serial

    parts = _partitions(disk)
    assert "data" in parts and "boot" in parts, parts
    assert _read_data_file(disk, *parts["data"]) == "precious user data\n"

    result = boot(disk, firmware="bios", kind="disk", timeout=180)
    print(f"installed disk boot: {result.seconds:.1f}s")
    assert result.ok, result.describe()
    f = result.fields()
    assert json.loads(f["config_ign"]) == json.loads(demo_artifacts.ignition.read_text())
    cmdline = f["cmdline"].split()
    assert "ignition.firstboot" in cmdline
    assert "nestos.test=customized" in cmdline, f["cmdline"]  # from installer.d
    # network kargs of the live boot are forwarded to the first boot only
    assert "rd.neednet=1" in cmdline and "ip=dhcp" in cmdline, f["cmdline"]


def test_pxe_autoinstall_bad_image_wipes_and_stays(
    demo_artifacts: Artifacts,  # noqa: F811
    live_rootfs: Path,
    http_dir: tuple[Path, int],
    tmp_path: Path,
) -> None:
    """A tampered offline image fails after writing began: error on the console, no reboot,
    partition table wiped. (A wrong ignition-hash fails before the disk is touched.)"""
    require_qemu()
    require_tools("sgdisk", "sfdisk")
    served, port = http_dir
    shutil.copy(demo_artifacts.ignition, served / "cfg.ign")
    a = demo_artifacts
    bad = tmp_path / a.raw_xz.name
    data = bytearray(a.raw_xz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # past the first MiB: the writer has started when it shows
    bad.write_bytes(bytes(data))
    offline = liveroot.offline_image_cpio(
        bad, a.raw_xz_sig, a.public_key, tmp_path / "offline.cpio.gz"
    )
    disk = tmp_path / "disk.img"
    _blank_disk_with_data(disk, demo_artifacts, with_data=False)
    assert _partitions(disk), "test setup: the disk should start with a partition table"
    append = (
        "console=ttyS0,115200n8 rdinit=/lib/systemd/systemd panic=1 "
        "nestos.inst.install_dev=/dev/vda nestos.inst.ignition_url=http://10.0.2.100/cfg.ign"
    )
    run = live_boot(
        a.pxe_kernel, [live_rootfs, offline], append, disk, port, stop_when=(FAILED, EMERGENCY)
    )
    print(f"live autoinstall failure boot: {run.seconds:.1f}s")
    assert FAILED in run.serial, _tail(run.serial)
    assert "Error: " in run.serial
    assert EMERGENCY in run.serial, _tail(run.serial)
    assert not run.exited, "the live system rebooted after a failed install"
    assert "nestos-installer: install complete." not in run.serial
    with open(disk, "rb") as f:
        head = f.read(34 * 512)
    assert head[512:520] != b"EFI PART", _tail(run.serial)
    assert _partitions(disk) == {}
