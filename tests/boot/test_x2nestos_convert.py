"""x2nestos end to end in QEMU (TCG), issue 8's proof: a Debian host VM (mmdebstrap; hostname,
a static address, a sudo user and root with SSH keys, host keys) runs the zipapp with a bare
python3: doctor --json, plan, convert --stage-only + unload, then `convert --yes` with signed
live PXE files. It kexecs for real into the autoinstall live environment (issue 7), which
re-checks the target by its /dev/disk/by-id name, installs the signed demo metal image onto the
host's own disk and reboots; the converted disk then boots alone and prints its Ignition
config (carried hostname, keys, network) and kargs (carried console).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.hostfacts.debianhost import build_host_rootfs, ext4_image, identity_cpio
from fixtures.hostfacts.hosttree import sign_pxe, ssh_key
from helpers.capabilities import require_loop, require_qemu, require_tools
from helpers.images import demo_artifacts  # noqa: F401
from nestos_demo.kernel import ensure_kernel
from nestos_demo.qemu import Disk, boot

REPO = Path(__file__).resolve().parents[2]
RUN_SH = """X="python3 -I /media/x2nestos.pyz"
A="@ARGS@"
echo "=====X2N-DOCTOR-BEGIN====="; $X doctor --json $A; echo "DOCTOR-RC: $?"
echo "=====X2N-DOCTOR-END====="
echo "=====X2N-PLAN-BEGIN====="; $X plan $A; echo "PLAN-RC: $?"; echo "=====X2N-PLAN-END====="
echo "=====X2N-STAGE-BEGIN====="; $X convert --stage-only $A; echo "STAGE-RC: $?"
echo "LOADED-AFTER-STAGE: $(cat /sys/kernel/kexec_loaded)"
$X unload --work-dir /media/stage; echo "UNLOAD-RC: $?"
echo "LOADED-AFTER-UNLOAD: $(cat /sys/kernel/kexec_loaded)"
echo "STAGED-FILES: $(ls /media/stage | tr '\n' ' ')"
echo "=====X2N-STAGE-END====="
echo "=====X2N-CONVERT-BEGIN====="; $X convert --yes $A; echo "CONVERT-RC: $?"
echo "=====X2N-CONVERT-END====="
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


def _decode(res: dict) -> bytes:
    return gzip.decompress(base64.b64decode(res["source"].split(",", 1)[1]))


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
    tmp_path: Path, media: Path, args: str, ident: Path, *, media_mib: int, timeout: float
) -> tuple:
    """Boot the Debian host with the media disk (vda) and an empty 8 GiB target (vdb)."""
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
    (media / "run.sh").write_text(RUN_SH.replace("@ARGS@", args))
    media_img = ext4_image(tmp_path / "media.img", media, size_mib=media_mib)
    target = tmp_path / "target.raw"
    with open(target, "wb") as f:
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
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
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


def _check_dest(dest: dict, alice: str, root_key: str, hostkey: bytes) -> None:
    users = {u["name"]: u for u in dest["passwd"]["users"]}
    assert users["alice"]["sshAuthorizedKeys"] == [alice]  # the no-pty option stripped
    assert users["alice"]["groups"] == ["wheel"]
    assert users["root"]["sshAuthorizedKeys"] == [root_key]
    dfiles = {f["path"]: f for f in dest["storage"]["files"]}
    assert _decode(dfiles["/etc/hostname"]["contents"]) == b"debhost\n"
    assert _decode(dfiles["/etc/ssh/ssh_host_ed25519_key"]["contents"]) == hostkey
    keyfile = _decode(
        dfiles["/etc/NetworkManager/system-connections/eth0.nmconnection"]["contents"]
    ).decode()
    assert "mac-address=52:54:00:12:34:56" in keyfile  # matched by MAC, not by name
    assert "address1=10.0.2.15/24,10.0.2.2" in keyfile
    assert json.loads(_decode(dest["ignition"]["config"]["merge"][0])) == USER_IGN


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_convert_installs_and_boots(demo_artifacts, tmp_path: Path) -> None:  # noqa: F811
    """The whole conversion: host -> kexec -> the autoinstall live environment installs the
    signed demo metal image onto the host's disk (by its by-id name) -> the disk boots alone."""
    require_qemu()
    require_loop()
    require_tools(
        "mmdebstrap", "zstd", "cpio", "mke2fs", "modprobe", "depmod", "ssh-keygen", "gpg", "gpgv"
    )
    from nestos_demo.liveroot import build_live_rootfs, offline_image_cpio

    ident, alice, root_key, hostkey = _identity(tmp_path)
    media = tmp_path / "media"
    pxe = media / "pxe"
    pxe.mkdir(parents=True)
    kernel = ensure_kernel()
    shutil.copyfile(kernel.vmlinuz, pxe / "vmlinuz")
    shutil.copyfile(build_live_rootfs(kernel=kernel), pxe / "initrd.img")
    offline_image_cpio(
        demo_artifacts.raw_xz,
        demo_artifacts.raw_xz_sig,
        demo_artifacts.public_key,
        pxe / "rootfs.img",
    )
    sign_pxe(pxe, tmp_path / "gpg", media / "key.asc")
    args = (
        "--pxe /media/pxe --keyring /media/key.asc -d /dev/vdb -i /media/user.ign "
        "--carry all --work-dir /media/stage"
    )
    result, target = _run_host_vm(tmp_path, media, args, ident, media_mib=768, timeout=1200)
    print(f"VM proof (host + live install): {result.seconds:.0f}s wall")
    text = result.serial_text
    _check_host_side(text, "kernel")
    after = text.split("jumping into the NestOS live environment", 1)[1]
    assert "x2nestos: target /dev/disk/by-id/virtio-x2n-target" in after, after[-3000:]
    assert not result.timed_out, result.describe()

    disk = boot(target, firmware="bios", kind="disk", timeout=240, serial_log=tmp_path / "disk.log")
    print(f"converted disk boot: {disk.seconds:.0f}s wall")
    assert disk.ok, disk.describe()
    fields = disk.fields()
    assert "console=ttyS0,115200n8" in fields["cmdline"]
    assert "net.ifnames=0" in fields["cmdline"]  # carried with the network
    assert "ignition.firstboot" in fields["cmdline"]
    _check_dest(json.loads(fields["config_ign"]), alice, root_key, hostkey)
