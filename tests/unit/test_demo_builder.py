"""The demo builder's outputs, read back with real tools (no VM): GPT layouts, filesystems,
xz blocks, GPG signatures, stream JSON, Ignition, live ISO metadata and embed areas, initrds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pycdlib
import pytest

from helpers.capabilities import require_tools
from helpers.images import Artifacts, demo_artifacts, parse_markers  # noqa: F401
from nestos_demo.build import build
from nestos_demo.qemu import OVMF_VARS, Disk, accel_args, qemu_argv

pytestmark = pytest.mark.slow
DEMO_DIR = Path(__file__).resolve().parents[2] / "packaging" / "demo"


def sh(*argv: str, input: Optional[bytes] = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=input, capture_output=True, check=True)


def test_metal_gpt_layout(demo_artifacts: Artifacts) -> None:  # noqa: F811
    table = json.loads(sh("sfdisk", "--json", str(demo_artifacts.raw)).stdout)["partitiontable"]
    assert table["label"] == "gpt" and table["sectorsize"] == 512
    parts = [(p["name"], p["type"], p["start"], p["size"]) for p in table["partitions"]]
    assert [p[0] for p in parts] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
    assert parts[0][1] == "21686148-6449-6E6F-744E-656564454649" and parts[0][3] == 2048
    assert parts[1][1] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    # NestOS's boot partition has the plain Linux type; the installer finds it by fs label
    assert parts[2][1] == parts[3][1] == "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    expect = {
        "EFI-SYSTEM": ("vfat", "EFI-SYSTEM"),
        "boot": ("ext4", "boot"),
        "root": ("xfs", "root"),
    }
    for name, _, start, size in parts[1:]:
        out = sh(
            "blkid",
            "-p",
            "-O",
            str(start * 512),
            "-S",
            str(size * 512),
            "-o",
            "export",
            str(demo_artifacts.raw),
        ).stdout.decode()
        props = dict(line.split("=", 1) for line in out.split())
        assert (props["TYPE"], props["LABEL"]) == expect[name]
    with open(demo_artifacts.raw, "rb") as f:
        mbr = f.read(512)
    boot_img = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    assert mbr[0x60:0x1B8] == boot_img[0x60:0x1B8]  # GRUB boot code (BPB area excluded)
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == 2048  # core.img in BIOS-BOOT
    assert mbr[446 + 4] == 0xEE and mbr[510:] == b"\x55\xaa"


def test_boot_filesystem_contents(demo_artifacts: Artifacts, tmp_path: Path) -> None:  # noqa: F811
    require_tools("debugfs")
    table = json.loads(sh("sfdisk", "--json", str(demo_artifacts.raw)).stdout)["partitiontable"]
    part = next(p for p in table["partitions"] if p["name"] == "boot")
    boot = tmp_path / "boot.img"
    sh(
        "dd",
        f"if={demo_artifacts.raw}",
        f"of={boot}",
        "bs=512",
        f"skip={part['start']}",
        f"count={part['size']}",
    )

    def cat(path: str) -> str:
        return str(sh("debugfs", "-R", f"cat {path}", str(boot)).stdout.decode())

    entry = cat("/loader/entries/ostree-1-nestos.conf")
    options = re.search(r"^options (.*)$", entry, re.M)
    assert options is not None
    assert options.group(1) == (
        "root=LABEL=root rw console=ttyS0,115200n8 panic=1 ignition.platform.id=metal "
        "$ignition_firstboot"
    )
    assert re.search(r"^linux /ostree/\S+/vmlinuz-", entry, re.M)
    assert cat("/ignition.firstboot") == ""
    grub_cfg = cat("/grub2/grub.cfg")
    assert "\n# CONSOLE-SETTINGS-START\n" in grub_cfg and "# CONSOLE-SETTINGS-END\n" in grub_cfg
    platforms = json.loads(cat("/nestos/platforms.json"))
    assert {"metal", "qemu", "openstack", "aliyun"} <= set(platforms)
    assert platforms["qemu"]["kernel_arguments"] == ["console=ttyS0,115200n8"]
    top = sh("debugfs", "-R", "ls -p /", str(boot)).stdout.decode()
    names = {ln.split("/")[5] for ln in top.splitlines() if ln.count("/") >= 6}
    assert "ignition.firstboot" in names and "ignition" not in names  # no config shipped


def test_xz_multiblock_and_digests(demo_artifacts: Artifacts) -> None:  # noqa: F811
    files = demo_artifacts.manifest()["files"]
    robot = sh("xz", "--robot", "--list", "-vv", str(demo_artifacts.raw_xz)).stdout.decode()
    blocks = [ln for ln in robot.splitlines() if ln.startswith("block\t")]
    assert len(blocks) > 1
    assert all("\tCRC64\t" in ln for ln in blocks)
    raw = lzma.decompress(demo_artifacts.raw_xz.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == files["raw_xz"]["uncompressed-sha256"]
    assert raw == demo_artifacts.raw.read_bytes()


def test_4kn_image_has_4096_byte_gpt(demo_artifacts: Artifacts) -> None:  # noqa: F811
    raw = lzma.decompress(demo_artifacts.raw_4k_xz.read_bytes())
    assert raw[512:520] != b"EFI PART" and raw[4096:4104] == b"EFI PART"
    assert struct.unpack_from("<Q", raw, 4096 + 72)[0] == 2  # entries at LBA 2 (byte 8192)
    name = raw[8192 + 2 * 128 + 56 : 8192 + 2 * 128 + 56 + 8].decode("utf-16-le")
    assert name == "boot"
    first = struct.unpack_from("<Q", raw, 8192 + 2 * 128 + 32)[0]
    assert raw[first * 4096 + 1024 + 0x38 : first * 4096 + 1024 + 0x3A] == b"\x53\xef"  # ext4


def test_signatures_verify_with_exported_key(demo_artifacts: Artifacts, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--status-fd", "1"]
    sh(*gpg, "--import", str(demo_artifacts.public_key))
    for art, sig in [
        (demo_artifacts.raw_xz, demo_artifacts.raw_xz_sig),
        (demo_artifacts.raw_4k_xz, demo_artifacts.raw_4k_xz_sig),
        (demo_artifacts.iso, demo_artifacts.iso_sig),
    ]:
        assert sig.read_bytes()[:1] != b"-"  # binary, not armored
        assert "[GNUPG:] VALIDSIG" in sh(*gpg, "--verify", str(sig), str(art)).stdout.decode()
    bad = tmp_path / "tampered.raw.xz"
    shutil.copy(demo_artifacts.raw_xz, bad)
    with open(bad, "r+b") as f:
        f.seek(100000)
        byte = f.read(1)
        f.seek(100000)
        f.write(bytes([byte[0] ^ 1]))
    res = subprocess.run(
        [*gpg, "--verify", str(demo_artifacts.raw_xz_sig), str(bad)],
        capture_output=True,
        check=False,
    )
    assert res.returncode != 0 and b"BADSIG" in res.stdout


def test_stream_points_at_base_url(demo_artifacts: Artifacts, tmp_path: Path) -> None:  # noqa: F811
    path = demo_artifacts.write_stream("http://127.0.0.1:4321/x", dest=tmp_path / "demo.json")
    doc = json.loads(path.read_text())
    formats = doc["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]
    assert set(formats) == {"raw.xz", "4k.raw.xz", "iso", "pxe"}
    assert set(formats["pxe"]) == {"kernel", "initramfs", "rootfs"}
    disk = formats["raw.xz"]["disk"]
    assert disk["location"] == f"http://127.0.0.1:4321/x/{demo_artifacts.raw_xz.name}"
    assert disk["signature"] == disk["location"] + ".sig"
    for fmt in formats.values():
        for entry in fmt.values():
            local = demo_artifacts.out_dir / entry["location"].rsplit("/", 1)[1]
            assert hashlib.sha256(local.read_bytes()).hexdigest() == entry["sha256"]


def test_ignition_config_validates(demo_artifacts: Artifacts) -> None:  # noqa: F811
    require_tools("ignition-validate")
    sh("ignition-validate", str(demo_artifacts.ignition))
    cfg = json.loads(demo_artifacts.ignition.read_text())
    assert cfg["ignition"]["version"] == "3.3.0"
    assert cfg["passwd"]["users"][0]["name"] == "core"
    assert demo_artifacts.ignition.stat().st_mode & 0o077 == 0


def _iso_file(iso: pycdlib.PyCdlib, path: str) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, iso_path=path)
    return buf.getvalue()


def test_live_iso_layout(demo_artifacts: Artifacts) -> None:  # noqa: F811
    iso = pycdlib.PyCdlib()
    iso.open(str(demo_artifacts.iso))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == demo_artifacts.volume_id
        assert json.loads(_iso_file(iso, "/NESTOS/IGNINFO.JSO;1")) == {
            "file": "images/ignition.img"
        }
        assert _iso_file(iso, "/IMAGES/IGNITION.IMG;1") == b"\0" * 262144
        features = json.loads(_iso_file(iso, "/NESTOS/FEATURES.JSO;1"))
        assert features["live-initrd-network"] is True
        assert features["installer-config-directives"]["console"] is True
        kargs = json.loads(_iso_file(iso, "/NESTOS/KARGS.JSO;1"))
        assert f"nestos.liveiso={demo_artifacts.volume_id}" in kargs["default"].split()
        paths = sorted(f["path"] for f in kargs["files"])
        assert paths == ["EFI/openEuler/grub.cfg", "boot/grub/grub.cfg"]
        for f in kargs["files"]:
            # ISO9660 level-1 names: EFI/openEuler -> EFI/OPENEULE
            parts = [p.upper()[:8] for p in f["path"].split("/")]
            parts[-1] = "GRUB.CFG;1"
            data = _iso_file(iso, "/" + "/".join(parts)).decode()
            area = data[f["offset"] : f["offset"] + kargs["size"]]
            assert area.rstrip("#").rstrip("\n") == kargs["default"]
            assert data[f["offset"] + kargs["size"] :].startswith("# NESTOS_KARG_EMBED_AREA\n")
        for name in ("VMLINUZ.;1", "INITRD.IMG;1", "ROOTFS.IMG;1"):
            assert _iso_file(iso, f"/IMAGES/PXEBOOT/{name}")
        assert (
            _iso_file(iso, "/IMAGES/PXEBOOT/INITRD.IMG;1")
            == demo_artifacts.pxe_initramfs.read_bytes()
        )
    finally:
        iso.close()
    boot = sh("xorriso", "-indev", str(demo_artifacts.iso), "-report_el_torito", "plain")
    report = boot.stdout.decode() + boot.stderr.decode()
    assert "BIOS" in report and "UEFI" in report


def test_live_initramfs_and_rootfs(demo_artifacts: Artifacts) -> None:  # noqa: F811
    require_tools("cpio")
    cpio = gzip.decompress(demo_artifacts.pxe_initramfs.read_bytes())
    names = sh("cpio", "-it", "--quiet", input=cpio).stdout.decode().split()
    assert {"init", "bin/busybox", "etc/nestos-live-initramfs", "etc/nestos/features.json"} <= set(
        names
    )
    rootfs = demo_artifacts.pxe_rootfs.read_bytes()
    assert rootfs[:6] == b"070701" and rootfs[124:128] == b"hsqs"


def test_second_build_is_cached(demo_artifacts: Artifacts) -> None:  # noqa: F811
    again = build()
    assert again.out_dir == demo_artifacts.out_dir
    assert again.input_hash == demo_artifacts.input_hash


def test_parse_markers() -> None:
    serial = (
        "[    1.0] kernel noise\r\n=====NESTOS-DEMO-BEGIN=====\r\n"
        'CMDLINE: BOOT_IMAGE=/vmlinuz a=1 nestos.x="b c"\nFIRSTBOOT: present, content: []\n'
        'CONFIG-IGN-BEGIN\n{"ignition":{"version":"3.3.0"}}\nCONFIG-IGN-END\n'
        "NETWORK-FILE-BEGIN eth0.nmconnection\n[connection]\nid=eth0\n\nNETWORK-FILE-END\n"
        "GRUB-CONSOLE: serial --speed=115200; terminal_input serial console\n"
        "=====NESTOS-DEMO-END=====\nreboot: Power down\n"
    )
    f = parse_markers(serial)
    assert f["cmdline"] == 'BOOT_IMAGE=/vmlinuz a=1 nestos.x="b c"'
    assert f["firstboot"] == "present, content: []"
    assert json.loads(f["config_ign"]) == {"ignition": {"version": "3.3.0"}}
    assert f["network_file:eth0.nmconnection"] == "[connection]\nid=eth0\n"
    assert f["grub_console"].split("; ")[0] == "serial --speed=115200"
    assert parse_markers("no markers here") == {}
    assert "config_ign" not in parse_markers(
        "=====NESTOS-DEMO-BEGIN=====\nCONFIG-IGN: absent\n=====NESTOS-DEMO-END=====\n"
    )


def test_qemu_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tools("qemu-system-x86_64")
    monkeypatch.delenv("NESTOS_QEMU_ACCEL", raising=False)
    vars_file = tmp_path / "vars.fd"
    argv = qemu_argv(
        tmp_path / "disk.raw",
        firmware="uefi",
        kind="disk",
        serial_log=tmp_path / "s.log",
        vars_file=vars_file,
        kernel=None,
        initrd=None,
        append=None,
        extra_disks=[Disk(tmp_path / "t.raw")],
        memory=512,
        snapshot=True,
        net_forward_port=8080,
        extra_args=["-S"],
    )
    line = " ".join(argv)
    assert "-accel tcg,tb-size=256 -cpu max" in line and "-no-reboot" in line
    assert f"file={vars_file}" in line and vars_file.read_bytes() == OVMF_VARS.read_bytes()
    assert f"file={tmp_path / 'disk.raw'},snapshot=on" in line
    assert f"file={tmp_path / 't.raw'}" in line and "t.raw,snapshot" not in line
    assert "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080" in line and argv[-1] == "-S"
    monkeypatch.setenv("NESTOS_QEMU_ACCEL", "kvm")
    assert accel_args() == ["-accel", "kvm", "-cpu", "host"]


def test_module_entry_point_build(demo_artifacts: Artifacts) -> None:  # noqa: F811
    env = dict(os.environ, PYTHONPATH=str(DEMO_DIR))
    proc = subprocess.run(
        [sys.executable, "-m", "nestos_demo", "build", "--base-url", "http://127.0.0.1:9/d/"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "up to date" in proc.stdout and str(demo_artifacts.out_dir) in proc.stdout
    stream = json.loads((demo_artifacts.out_dir / "streams" / "demo.json").read_text())
    metal = stream["architectures"]["x86_64"]["artifacts"]["metal"]
    assert metal["formats"]["iso"]["disk"]["location"].startswith("http://127.0.0.1:9/d/")
