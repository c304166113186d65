"""x2nestos in local mode, end to end in QEMU (TCG): a Debian host VM (mmdebstrap; hostname,
a static address, a sudo user and root with SSH keys, host keys) runs the zipapp with a bare
python3: doctor --json, plan, convert --stage-only + unload, then `convert --yes` with signed
live PXE files. It kexecs for real into the autoinstall live environment, under the dead-man
switch (issue 17), where the install fails after its first write: the live environment stays
up. (A live check that fails before the first write boots the old system again: proven over
SSH on the LVM test host by test_x2nestos_remote.py, which with test_fleet_ansible.py also
proves conversions that boot into NestOS; after the staging step, local and --host
conversions hand the live environment the same payload.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from fixtures.hostfacts.debianhost import build_host_rootfs, ext4_image, identity_cpio
from fixtures.hostfacts.hosttree import ssh_key
from fixtures.hostfacts.liveartifacts import sign_pxe
from helpers.capabilities import require_qemu, require_tools
from helpers.httpserver import TestServer
from helpers.images import demo_artifacts  # noqa: F401
from nestos_demo.kernel import ensure_kernel
from nestos_demo.qemu import Disk, boot

REPO = Path(__file__).resolve().parents[2]
HOST_CHECKS_SH = """echo "=====X2N-DOCTOR-BEGIN====="; $X doctor --json $A; echo "DOCTOR-RC: $?"
echo "=====X2N-DOCTOR-END====="
echo "=====X2N-PLAN-BEGIN====="; $X plan $A; echo "PLAN-RC: $?"; echo "=====X2N-PLAN-END====="
echo "=====X2N-STAGE-BEGIN====="; $X convert --stage-only $A; echo "STAGE-RC: $?"
echo "LOADED-AFTER-STAGE: $(cat /sys/kernel/kexec_loaded)"
$X unload --work-dir /media/stage; echo "UNLOAD-RC: $?"
echo "LOADED-AFTER-UNLOAD: $(cat /sys/kernel/kexec_loaded)"
echo "STAGED-FILES: $(ls /media/stage | tr '\n' ' ')"
echo "=====X2N-STAGE-END====="
"""
INTERFACES = """auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 10.0.2.15/24
    gateway 10.0.2.2
    dns-nameservers 10.0.2.3
"""


def _block(text: str, name: str) -> str:
    m = re.search(f"====={name}-BEGIN=====\n(.*?)====={name}-END=====", text, re.S)
    assert m, f"no {name} block in the serial log:\n" + "\n".join(text.splitlines()[-60:])
    return m.group(1)


def _identity(tmp_path: Path) -> tuple:
    keys = tmp_path / "keys"
    alice = ssh_key(keys / "alice", "alice@laptop")
    root_key = ssh_key(keys / "root", "admin@bastion")
    ssh_key(keys / "ssh_host_ed25519_key", "root@debhost")
    hostkey = (keys / "ssh_host_ed25519_key").read_bytes()
    ident = identity_cpio(
        {
            "etc/hostname": b"debhost\n",
            "etc/network/interfaces": INTERFACES.encode(),
            "home/alice/.ssh/authorized_keys": f"no-pty {alice}\n".encode(),
            "root/.ssh/authorized_keys": f"{root_key}\n".encode(),
            "etc/ssh/ssh_host_ed25519_key": hostkey,
            "etc/ssh/ssh_host_ed25519_key.pub": (keys / "ssh_host_ed25519_key.pub").read_bytes(),
        },
        {"etc/ssh/ssh_host_ed25519_key": 0o600, "root/.ssh/authorized_keys": 0o600},
        tmp_path,
    )
    return ident, alice, root_key, hostkey


USER_IGN = {
    "ignition": {"version": "3.3.0"},
    "storage": {"files": [{"path": "/etc/motd", "contents": {"source": "data:,hi"}}]},
}


def _run_host_vm(
    tmp_path: Path,
    media: Path,
    args: str,
    ident: Path,
    *,
    media_mib: int,
    timeout: float,
    run_sh: str,
    http_port: Optional[int] = None,
    qmp: Optional[Path] = None,
) -> tuple:
    """Boot the Debian host with the media disk (vda) and an empty 8 GiB target (vdb).

    A reboot ends QEMU. `http_port`: the guest reaches
    127.0.0.1:PORT as http://10.0.2.100/. `qmp`: a QMP socket to end QEMU from the test."""
    net = "user,id=n0,restrict=on"
    if http_port is not None:
        net += f",guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:{http_port}"
    kernel = ensure_kernel()
    host = build_host_rootfs(kernel.root, kernel.version)
    subprocess.run(
        [
            sys.executable,
            str(REPO / "packaging/zipapp/build_pyz.py"),
            "-o",
            str(media / "x2nestos.pyz"),
        ],
        check=True,
        capture_output=True,
    )
    (media / "user.ign").write_text(json.dumps(USER_IGN))
    (media / "run.sh").write_text(run_sh.replace("@ARGS@", args))
    media_img = ext4_image(tmp_path / "media.img", media, size_mib=media_mib)
    target = tmp_path / "target.raw"
    with open(target, "ab") as f:  # a test may have put an old system's first MiB there
        f.truncate(8 << 30)
    result = boot(
        kind="kernel",
        kernel=kernel.vmlinuz,
        initrd=[host, ident],
        append="console=ttyS0,115200n8 rdinit=/init panic=1 loglevel=1 net.ifnames=0 "
        "systemd.mask=serial-getty@ttyS0.service systemd.mask=getty@tty1.service",
        extra_disks=[Disk(media_img)],
        extra_args=[
            "-drive",
            f"if=none,id=tgt,format=raw,file={target}",
            "-device",
            "virtio-blk-pci,drive=tgt,serial=x2n-target",
            "-netdev",
            net,
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
            *(["-qmp", f"unix:{qmp},server=on,wait=off"] if qmp else []),
        ],
        memory=2048,
        timeout=timeout,
        serial_log=tmp_path / "serial.log",
    )
    return result, target


def _check_host_side(text: str, source: str) -> None:
    doctor = _block(text, "X2N-DOCTOR")
    assert "DOCTOR-RC: 0" in doctor, doctor
    d = json.loads(doctor[: doctor.rindex("DOCTOR-RC")])
    assert d["ok"] and d["architecture"] == "x86_64"
    assert d["target"]["stable-path"] == "/dev/disk/by-id/virtio-x2n-target"
    assert d["target"]["size"] == 8 << 30
    assert d["artifacts"]["architecture"] == "x86_64"
    assert d["kexec"]["syscall"] == "kexec_load"
    plan = _block(text, "X2N-PLAN")
    assert "PLAN-RC: 0" in plan and "hostname: debhost" in plan
    assert "ssh-keys: 1 key(s) of alice" in plan and "eth0.nmconnection" in plan
    stage = _block(text, "X2N-STAGE")
    assert "STAGE-RC: 0" in stage and "LOADED-AFTER-STAGE: 1" in stage, stage
    assert "unloaded the staged kernel" in stage and "UNLOAD-RC: 0" in stage
    assert "LOADED-AFTER-UNLOAD: 0" in stage
    assert re.search(r"^STAGED-FILES: *$", stage, re.M), stage  # staging dir cleaned
    # the convert block has no end marker: the kexec jump ends the host mid-script
    convert = text.split("=====X2N-CONVERT-BEGIN=====", 1)[1].split("=====NESTOS-DEMO", 1)[0]
    assert f"{source}: good signature from" in convert, convert
    assert "loading the live kernel (kexec -c)" in convert
    assert "jumping into the NestOS live environment" in convert


def _signed_pxe(tmp_path: Path, offline: object) -> Path:
    """media/pxe: the demo kernel and live rootfs (and, given the demo artifacts, their signed
    metal image as rootfs.img), each signed by a fresh key; media/key.asc trusts it."""
    from nestos_demo.liveroot import build_live_rootfs, offline_image_cpio

    media = tmp_path / "media"
    pxe = media / "pxe"
    pxe.mkdir(parents=True)
    kernel = ensure_kernel()
    shutil.copyfile(kernel.vmlinuz, pxe / "vmlinuz")
    shutil.copyfile(build_live_rootfs(kernel=kernel), pxe / "initrd.img")
    if offline is not None:
        a = offline
        offline_image_cpio(a.raw_xz, a.raw_xz_sig, a.public_key, pxe / "rootfs.img")  # type: ignore[attr-defined]
    sign_pxe(pxe, tmp_path / "gpg", media / "key.asc")
    return media


RUN_BACK_SH = (
    """X="python3 -I /media/x2nestos.pyz"
A="@ARGS@"
key() { sha256sum /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1; }
if [ -e /media/converted-once ]; then
    echo "=====X2N-BACK-BEGIN====="
    echo "HOSTKEY: $(key)"
    echo "HOSTNAME: $(cat /etc/hostname)"
    echo "=====X2N-BACK-END====="
    sync; poweroff -f
fi
echo "HOSTKEY-BEFORE: $(key)"
touch /media/converted-once; sync
"""
    + HOST_CHECKS_SH
    + """
echo "=====X2N-CONVERT-BEGIN====="; $X convert --yes $A; echo "CONVERT-RC: $?"
"""
)


def _quit_after(serial: Path, qmp: Path, pattern: str, grace: float) -> threading.Thread:
    """End QEMU over QMP `grace` seconds after `pattern` shows on the serial console (a
    live environment that stays up never powers off by itself)."""

    def run() -> None:
        while not serial.exists() or pattern not in serial.read_text(errors="replace"):
            time.sleep(2)
        time.sleep(grace)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(qmp))
            s.recv(4096)
            s.sendall(b'{"execute": "qmp_capabilities"}\n')
            s.recv(4096)
            s.sendall(b'{"execute": "quit"}\n')
            s.recv(4096)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_failure_after_writing_began_stays_up(demo_artifacts, tmp_path: Path) -> None:  # noqa: F811
    """Issue 17 item 4: the image stream breaks after the first write (an unsigned image,
    allowed by nestos.inst.insecure, with a flipped byte): the target is wiped and the live
    environment stays up, saying so, with sshd and the network running; it does not reboot."""
    require_qemu()
    require_tools("mmdebstrap", "zstd", "cpio", "mke2fs", "modprobe", "depmod", "ssh-keygen", "gpg")
    ident, _, _, _ = _identity(tmp_path)
    media = _signed_pxe(tmp_path, None)
    (tmp_path / "target.raw").write_bytes(os.urandom(1 << 20))
    qmp = tmp_path / "qmp.sock"
    with TestServer() as srv:
        srv.add("m.raw.xz", demo_artifacts.raw_xz)
        srv.behave("m.raw.xz", corrupt_at=demo_artifacts.raw_xz.stat().st_size // 2)
        args = (
            "--pxe /media/pxe --keyring /media/key.asc -d /dev/vdb -i /media/user.ign "
            "--carry all --work-dir /media/stage --live-karg nestos.inst.insecure=1 "
            "--live-karg nestos.inst.image_url=http://10.0.2.100/m.raw.xz"
        )
        _quit_after(tmp_path / "serial.log", qmp, "staying in the live environment", 25)
        result, target = _run_host_vm(
            tmp_path, media, args, ident, media_mib=512, timeout=1200,
            run_sh=RUN_BACK_SH, http_port=srv.port, qmp=qmp,
        )  # fmt: skip
    text = result.serial_text
    print(f"VM proof (host, live install breaks after writing, stays): {result.seconds:.0f}s")
    assert not result.timed_out, text[-4000:]
    _check_host_side(text, "kernel")
    live = text.split("jumping into the NestOS live environment", 1)[1]
    live = re.sub(r"\x1b\[[0-9;]*[mK]", "", live)  # systemd's colours
    assert "dead-man switch armed" in live, live[-4000:]
    assert re.search(r"Command line: .* panic=10 ", live), live[:3000]  # a panic reboots too
    assert "Pre-write checks passed; writing" in live, live[-4000:]
    assert "writing had begun: the target was wiped" in live, live[-4000:]
    assert "machine restart" not in live and "X2N-BACK-BEGIN" not in live  # never rebooted
    # the failed installer's emergency target is not isolated: sshd and the network stay
    assert "Started ssh.service" in live, live[-4000:]
    assert not re.search(r"Stopp(ed|ing) (ssh|NetworkManager)\.service", live), live[-4000:]
    with open(target, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)  # wiped: no old system, no half install
