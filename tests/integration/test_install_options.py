"""`install` options on real loop disks: saved partitions, config files, auto: selection,
--plan, Ignition URLs and hashes, sector sizes, progress; each bad input refused with one
clear line and the disk left as it was (or wiped where the spec says so)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from helpers.httpserver import TestServer
from helpers.images import demo_artifacts  # noqa: F401
from helpers.loopdev import loop_disk, read_at

pytestmark = [pytest.mark.root, pytest.mark.xdist_group("demo")]
MIB = 1 << 20
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DATA_UUID = "5A4E8A7C-1B2D-4E3F-9A0B-123456789ABC"


def installer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nestos_installer", "install", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def table(dev: str) -> List[Dict[str, str]]:
    out = subprocess.run(["sfdisk", "--json", dev], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return list(json.loads(out.stdout)["partitiontable"]["partitions"])


@contextmanager
def mounted(part: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", part, mnt], check=True)
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def add_data_partition(dev: str, index: int = 9) -> None:
    """A `data` partition at 200 MiB with attributes and a file, as a user would have."""
    proc = subprocess.run(["sfdisk", "--dump", dev], check=False, capture_output=True, text=True)
    dump = proc.stdout if proc.returncode == 0 else "label: gpt\n"
    lines = [ln for ln in dump.splitlines() if ln and not ln.startswith(("last-lba", "device"))]
    # sfdisk takes the partition number from the device name (`-N` would pick the next free)
    lines.append(
        f"{dev}p{index} : start={200 * MIB // 512}, size={32 * MIB // 512}, "
        f'type={LINUX}, uuid={DATA_UUID}, name="data", attrs="GUID:60"'
    )
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", dev],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    subprocess.run(["partx", "-u", dev], check=False, capture_output=True)
    subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
    part = [p["node"] for p in table(dev) if p.get("name") == "data"][0]
    subprocess.run(["mkfs.ext4", "-q", "-L", "data", part], check=True)
    with mounted(part) as m:
        (m / "precious.txt").write_text("keep me\n")


def base_args(a) -> List[str]:  # type: ignore[no-untyped-def]
    return ["-f", str(a.raw_xz), "--keyring", str(a.public_key)]


def test_save_partlabel_keeps_partition_and_its_identity(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        assert installer(*base_args(a), dev).returncode == 0
        add_data_partition(dev)
        before = {p["name"]: p for p in table(dev)}["data"]
        proc = installer(*base_args(a), "--save-partlabel", "da*", "-i", str(a.ignition), dev)
        assert proc.returncode == 0, proc.stderr
        assert 'Saving partition 9 ("data") to new partition 9' in proc.stderr
        parts = {p["name"]: p for p in table(dev)}
        assert set(parts) == {"BIOS-BOOT", "EFI-SYSTEM", "boot", "root", "data"}
        data = parts["data"]
        for k in ("start", "size", "type", "uuid", "attrs"):
            assert data.get(k) == before.get(k), k
        assert data["node"].endswith("p9")
        with mounted(data["node"]) as m:
            assert (m / "precious.txt").read_text() == "keep me\n"


def test_save_partindex_renumbers_after_image(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        add_data_partition(dev, index=3)  # an empty disk but for `data` as partition 3
        proc = installer(*base_args(a), "--save-partindex", "2-3", dev)
        assert proc.returncode == 0, proc.stderr
        # the image uses 1-4, so the saved partition moves to max(next free, 3) = 5
        assert 'Saving partition 3 ("data") to new partition 5' in proc.stderr
        assert table(dev)[-1]["node"].endswith("p5")
        with mounted(table(dev)[-1]["node"]) as m:
            assert (m / "precious.txt").read_text() == "keep me\n"
        assert [p["name"] for p in table(dev)][-1] == "data"


def test_save_filter_matching_nothing_is_fine(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        proc = installer(*base_args(a), "--save-partlabel", "nothing-here*", dev)
        assert proc.returncode == 0, proc.stderr
        assert len(table(dev)) == 4


def test_save_collision_refused_before_writing(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        assert installer(*base_args(a), dev).returncode == 0
        before = read_at(dev, 0, 64 * MIB)
        proc = installer(*base_args(a), "--save-partlabel", "root", dev)
        assert proc.returncode != 0
        assert 'collision with partition 4 ("root")' in proc.stderr
        assert read_at(dev, 0, 64 * MIB) == before


def test_bad_partition_filters(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    cases = {
        "0": "partition index cannot be zero",
        "-": "cannot be open",
        "3-2": "cannot be greater than end",
        "1x": "couldn't parse partition index",
    }
    for value, message in cases.items():
        proc = installer(*base_args(a), "--save-partindex", value, "/dev/null")
        assert proc.returncode != 0 and message in proc.stderr, (value, proc.stderr)


def test_config_files_merge_and_firstboot_survives(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        c1 = tmp_path / "1.yaml"
        c1.write_text(
            f"dest-device: {dev}\nimage-file: {a.raw_xz}\nkeyring: [{a.public_key}]\n"
            "append-karg: [from.file=1]\nplatform: openstack\n"
        )
        c2 = tmp_path / "2.yaml"
        c2.write_text("append-karg: [from.file=2]\nplatform: qemu\n")
        proc = installer(
            "--config-file",
            str(c1),
            "--config-file",
            str(c2),
            "--append-karg",
            "from.cli=3",
            "--firstboot-args",
            "ip=dhcp",
        )
        assert proc.returncode == 0, proc.stderr
        assert "Setting platform to qemu" in proc.stderr
        boot = [p["node"] for p in table(dev) if p["name"] == "boot"][0]
        with mounted(boot) as m:
            entry = sorted((m / "loader" / "entries").glob("*.conf"))[-1].read_text()
            assert "from.file=1 from.file=2 from.cli=3" in entry
            assert "ignition.platform.id=qemu" in entry
            assert (m / "ignition.firstboot").read_text() == (
                'set ignition_network_kcmdline="ip=dhcp"\n'
            )


def test_config_file_errors(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    unknown = tmp_path / "u.yaml"
    unknown.write_text("dest-devise: /dev/sda\n")
    proc = installer("--config-file", str(unknown))
    assert proc.returncode == 1 and "unknown key 'dest-devise'" in proc.stderr
    dup = tmp_path / "d.yaml"
    dup.write_text("dest-device: /dev/loop-a\n")
    proc = installer("--config-file", str(dup), *base_args(a), "/dev/loop-b")
    assert proc.returncode == 2 and "destination device given twice" in proc.stderr
    proc = installer(*base_args(a))
    assert proc.returncode == 2 and "destination device must be specified" in proc.stderr


def test_bad_console_and_hash_syntax(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    proc = installer(*base_args(a), "--console", "ttyS0,115200x8", "/dev/null")
    assert proc.returncode == 2 and "invalid or unsupported console argument" in proc.stderr
    proc = installer(*base_args(a), "--console", "console=ttyS0", "/dev/null")
    assert proc.returncode == 2 and 'should not start with "console="' in proc.stderr
    proc = installer(*base_args(a), "--ignition-hash", "md5-abcd", "/dev/null")
    assert proc.returncode == 2 and "unknown hash type 'md5'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3


def test_ignition_url_hash_rules(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    data = a.ignition.read_bytes()
    good = "sha256-" + hashlib.sha256(data).hexdigest()
    bad = "sha256-" + hashlib.sha256(b"other").hexdigest()
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        url = srv.add("cfg.ign", data)
        with open(dev, "r+b") as f:
            f.write(b"keep" * 1024)
        proc = installer(*base_args(a), "--ignition-url", url, dev)
        assert proc.returncode == 2 and "refusing to fetch Ignition config over HTTP" in proc.stderr
        proc = installer(*base_args(a), "--ignition-url", url, "--ignition-hash", bad, dev)
        assert proc.returncode != 0 and "hash mismatch" in proc.stderr
        assert read_at(dev, 0, 4) == b"keep"  # refused before any write
        proc = installer(*base_args(a), "--ignition-url", url, "--ignition-hash", good, dev)
        assert proc.returncode == 0, proc.stderr
        boot = [p["node"] for p in table(dev) if p["name"] == "boot"][0]
        with mounted(boot) as m:
            assert (m / "ignition" / "config.ign").read_bytes() == data


def test_ignition_ca_checked_before_writing(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        with open(dev, "r+b") as f:
            f.write(b"keep")
        proc = installer(*base_args(a), "--ignition-ca", str(ca), dev)
        assert proc.returncode != 0 and "reading CA certificate bundle" in proc.stderr
        assert read_at(dev, 0, 4) == b"keep"


def test_4kn_image_on_512_disk_refused(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        proc = installer("-f", str(a.raw_4k_xz), "--keyring", str(a.public_key), dev)
        assert proc.returncode != 0
        assert "source has sector size 4096 but destination has sector size 512" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)  # wiped, as the spec says


def test_plan_writes_nothing(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        with open(dev, "r+b") as f:
            f.write(b"keep")
        proc = installer(
            *base_args(a),
            "--plan",
            "--append-karg",
            "x=1",
            "--console",
            "ttyS0,115200n8",
            "--save-partlabel",
            "data*",
            "--save-partindex",
            "2-",
            dev,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"target:      {dev}" in proc.stdout
        assert "save:        partitions labelled data*, partitions 2-" in proc.stdout
        assert f"file {a.raw_xz}" in proc.stdout
        assert "append karg: x=1" in proc.stdout and "console:     ttyS0,115200n8" in proc.stdout
        assert read_at(dev, 0, 4) == b"keep"


def test_auto_selection_picks_exactly_one(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    size = 777 * MIB  # a size no other test uses
    with loop_disk(tmp_path / "d.img", size) as dev:
        spec = "auto:type=loop,min-size=777M,max-size=777M"
        proc = installer(*base_args(a), spec)
        assert proc.returncode == 0, proc.stderr
        assert f"Selected disk {dev}" in proc.stderr
        assert len(table(dev)) == 4
        with loop_disk(tmp_path / "e.img", size) as dev2:
            proc = installer(*base_args(a), spec)
            assert proc.returncode != 0 and "refusing to guess" in proc.stderr
            assert dev in proc.stderr and dev2 in proc.stderr
    proc = installer(*base_args(a), "auto:type=loop,min-size=999T")
    assert proc.returncode != 0 and "no disk matches" in proc.stderr


def test_by_id_style_symlink_target(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        link = tmp_path / "by-id-link"
        os.symlink(dev, link)
        proc = installer(*base_args(a), str(link))
        assert proc.returncode == 0, proc.stderr
        assert f"Installing to {dev}" in proc.stderr


def test_progress_json(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        proc = installer(*base_args(a), "--progress", "json", dev)
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.startswith("{")]
        assert records and records[-1]["bytes"] == a.raw_xz.stat().st_size
        assert {"phase", "bytes", "total", "rate"} <= set(records[-1])
