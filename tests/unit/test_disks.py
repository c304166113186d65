"""nestos_installer.disks on fake /sys, /proc, /dev trees: the mount table, who holds a disk,
by-id names, the physical disks under / through LVM, MD RAID and multipath, and `auto:`."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from fixtures.hostfacts.hosttree import (
    Blk,
    GiB,
    Layout,
    block_layout,
    build_host,
    write_block_devices,
    write_layout,
)
from helpers.capabilities import require
from helpers.tools import pyenv_python
from nestos_installer import disks, diskselect
from nestos_installer.errors import TargetError, UsageError

REPO = Path(__file__).resolve().parents[2]


def layout(root: Path, name: str) -> Path:
    write_layout(root, block_layout(name))
    return root


# ---------------------------------------------------------------- mounts and swaps


def test_mounts_unescape_and_lookup(tmp_path: Path) -> None:
    build_host(tmp_path, data_mount=True)
    table = disks.mounts(tmp_path)
    assert "/srv/my data" in [m.target for m in table]
    assert disks.mount_of("/tmp/x", table).fstype == "tmpfs"  # type: ignore[union-attr]
    assert disks.mount_of("/var/lib/x2nestos", table).fstype == "ext4"  # type: ignore
    assert disks.mount_of("/boot/efi", table).target == "/boot"  # type: ignore
    root = [m for m in table if m.target == "/"][0]
    assert (root.devno, root.fstype, root.source) == ("254:1", "ext4", "/dev/vda1")


def test_swaps_and_busy_report(tmp_path: Path) -> None:
    layout(tmp_path, "lvm")
    assert disks.swaps(tmp_path) == ["/dev/dm-1"]
    assert disks.busy_report("/dev/vda", tmp_path) == [
        "/dev/vda1 mounted on /boot",
        "/dev/vda2 in use by /dev/dm-0",
        "/dev/vda2 in use by /dev/dm-1",
    ]
    assert disks.busy_report("dm-1", tmp_path) == ["/dev/dm-1 is swap device"]
    assert disks.busy_report("/dev/mapper/vg-root", tmp_path) == ["/dev/dm-0 mounted on /"]


def test_partitions_in_number_order(tmp_path: Path) -> None:
    devs = [Blk("sda", "8:0", 100 * GiB)]
    devs += [Blk(f"sda{n}", f"8:{n}", GiB, parent="sda", label=f"p{n}") for n in (11, 2, 1)]
    write_block_devices(tmp_path, devs)
    assert disks.partitions_of("/dev/sda", tmp_path) == ["/dev/sda1", "/dev/sda2", "/dev/sda11"]
    assert disks.partitions_of("sda2", tmp_path) == []
    assert [p.label for p in disks.resolve("sda", tmp_path).partitions] == ["p1", "p2", "p11"]


# ---------------------------------------------------------------- through the stack


@pytest.mark.parametrize(
    "name,expected",
    [
        ("plain", ["/dev/vda"]),  # / on vda1, /boot on vda2
        ("whole", ["/dev/vda"]),  # ext4 on the disk itself, no partition table
        ("lvm", ["/dev/vda"]),  # / on an LV whose only PV is vda2 (the dm-0 bug)
        ("lvm2", ["/dev/vda", "/dev/vdb"]),  # one VG over vda2 and vdb1
        ("raid1", ["/dev/vda", "/dev/vdb"]),  # md0 mirror over vda1 and vdb1
        ("multipath", ["/dev/sda", "/dev/sdb"]),  # both paths of one LUN
    ],
)
def test_root_disks_through_the_stack(tmp_path: Path, name: str, expected: List[str]) -> None:
    layout(tmp_path, name)
    assert disks.root_disks(tmp_path) == expected
    with pytest.raises(disks.TargetBusy):
        disks.require_not_root_disk(expected[-1], tmp_path)


@pytest.mark.parametrize(
    "name,dev,expected",
    [
        ("lvm", "/dev/mapper/vg-root", ["vda"]),
        ("lvm", "253:1", ["vda"]),
        ("lvm", "vda2", ["vda"]),
        ("lvm2", "dm-0", ["vda", "vdb"]),
        ("raid1", "/dev/md0", ["vda", "vdb"]),
        ("multipath", "/dev/mapper/mpatha1", ["sda", "sdb"]),  # kpartx part -> map -> paths
        ("multipath", "sdb", ["sdb"]),
    ],
)
def test_physical_disks(tmp_path: Path, name: str, dev: str, expected: List[str]) -> None:
    layout(tmp_path, name)
    assert disks.physical_disks(dev, tmp_path) == expected


def test_root_by_mount_source_when_devno_is_anonymous(tmp_path: Path) -> None:
    """btrfs reports a 0:N devno in mountinfo; the mount source names the device."""
    build = block_layout("plain")
    write_layout(tmp_path, Layout(build.devices, (("0:45", "/", "btrfs", "/dev/vda1"),)))
    assert disks.root_disks(tmp_path) == ["/dev/vda"]
    write_layout(tmp_path, Layout(build.devices, (("0:25", "/", "overlay", "overlay"),)))
    assert disks.root_disks(tmp_path) == []


def test_only_the_asked_mountpoints(tmp_path: Path) -> None:
    devs = block_layout("plain").devices + tuple(block_layout("lvm2").devices[3:5])
    mounts = (("254:1", "/", "ext4", "/dev/vda1"), ("254:17", "/boot/efi", "vfat", "/dev/vdb1"))
    write_layout(tmp_path, Layout(devs, mounts))
    assert disks.root_disks(tmp_path) == ["/dev/vda", "/dev/vdb"]
    assert disks.root_disks(tmp_path, ("/",)) == ["/dev/vda"]


def test_kernel_names(tmp_path: Path) -> None:
    layout(tmp_path, "lvm")
    assert disks.kernel_name("/dev/mapper/vg-root", tmp_path) == "dm-0"
    assert disks.kernel_name("253:0", tmp_path) == "dm-0"
    assert disks.kernel_name("vda1", tmp_path) == "vda1"
    with pytest.raises(TargetError, match="no block device has number 8:0"):
        disks.kernel_name("8:0", tmp_path)
    with pytest.raises(TargetError, match="is not a block device name"):
        disks.kernel_name("/dev/a b", tmp_path)


def test_canonical_device(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/file").write_text("x")
    os.symlink("file", tmp_path / "dev/link")
    with pytest.raises(TargetError, match="/dev/link is not a block device"):
        disks.canonical_device("/dev/link", tmp_path)
    with pytest.raises(TargetError, match="/dev/nothing does not exist"):
        disks.canonical_device("/dev/nothing", tmp_path)
    with pytest.raises(TargetError, match="is not a block device"):
        disks.canonical_device("/dev/null")  # the real root: a character device


# ---------------------------------------------------------------- the target disk


def test_target_identity_from_sysfs(tmp_path: Path) -> None:
    build_host(tmp_path)
    t = disks.resolve("/dev/vda", tmp_path)
    assert t.stable_path == "/dev/disk/by-id/virtio-x2n-test-disk"
    assert t.by_id_source == "sysfs"
    assert t.size == 20 << 30
    assert [p.label for p in t.partitions] == ["root", "boot", "data"]
    assert ("/dev/vda1", "/", "ext4") in t.mounted
    assert disks.resolve("vda", tmp_path).name == "vda"
    assert json.loads(json.dumps(t.to_json()))["partitions"][1]["label"] == "boot"


def test_target_identity_from_udev_links(tmp_path: Path) -> None:
    build_host(tmp_path)
    byid = tmp_path / "dev/disk/by-id"
    byid.mkdir(parents=True)
    os.symlink("../../vda", byid / "virtio-x2n-test-disk")
    os.symlink("../../vda1", byid / "virtio-x2n-test-disk-part1")
    os.symlink("../../vda", byid / "wwn-0x5000c500a1b2c3d4")
    t = disks.resolve("/dev/disk/by-id/virtio-x2n-test-disk", tmp_path)
    assert t.name == "vda"
    assert t.stable_path == "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"
    assert t.by_id_source == "udev"


def test_target_on_lvm_sees_what_is_stacked_on_it(tmp_path: Path) -> None:
    lvm = block_layout("lvm")
    crypt = Blk("dm-2", "253:2", GiB, slaves=("dm-0",), dm=("data", "CRYPT-LUKS2-x"))
    extra = (("253:2", "/srv/data", "ext4", "/dev/mapper/data"),)
    write_layout(tmp_path, Layout((*lvm.devices, crypt), lvm.mounts, lvm.swaps), extra)
    t = disks.resolve("/dev/vda", tmp_path)
    assert t.holders == ("dm-0", "dm-1")
    assert set(t.mounted) == {
        ("/dev/dm-0", "/", "xfs"),
        ("/dev/vda1", "/boot", "xfs"),
        ("/dev/dm-2", "/srv/data", "ext4"),  # dm-crypt on an LV on vda2
    }
    assert t.swap == ("/dev/dm-1",)


def test_multipath_paths_have_a_wwn_identity(tmp_path: Path) -> None:
    layout(tmp_path, "multipath")
    t = disks.resolve("sda", tmp_path)
    assert t.stable_path == "/dev/disk/by-id/wwn-0x600a098038303053453f463045727a51"
    assert t.holders == ("dm-0",)


@pytest.mark.parametrize(
    "name,spec,message,hint",
    [
        (
            "plain",
            "/dev/vda1",
            "/dev/vda1 is a partition of /dev/vda, not a whole disk",
            "/dev/vda",
        ),
        ("plain", "/dev/sdz", "/dev/sdz: no such block device", None),
        ("lvm", "/dev/dm-0", "/dev/dm-0 is an LVM logical volume, not a whole disk", "/dev/vda"),
        ("lvm", "/dev/mapper/vg-root", "vg-root is an LVM logical volume", "(/dev/vda)"),
        ("raid1", "md0", "md0 is a software RAID (md) device, not a whole disk", "/dev/vdb"),
        ("multipath", "dm-0", "dm-0 is a multipath device", "(/dev/sda, /dev/sdb)"),
    ],
)
def test_only_whole_physical_disks(
    tmp_path: Path, name: str, spec: str, message: str, hint: object
) -> None:
    layout(tmp_path, name)
    with pytest.raises(TargetError) as e:
        disks.resolve(spec, tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)
    if hint is not None:
        assert e.value.hint is not None and str(hint) in e.value.hint


# ---------------------------------------------------------------- auto:


def _sysfs_disk(root: Path, name: str, device_path: str, files: dict) -> None:
    """A disk whose `device` links into sys/devices like the kernel's, with extra attributes."""
    dev = root / "sys/devices" / device_path
    dev.mkdir(parents=True, exist_ok=True)
    link = root / "sys/block" / name / "device"
    os.symlink(os.path.relpath(dev, link.parent), link)
    for rel, data in files.items():
        p = root / "sys/block" / name / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())


def auto_host(root: Path) -> Path:
    """/ on vda1; a SATA SSD, a USB stick, a DVD drive, an NVMe disk, a read-only vdb, a busy
    vdc, an empty and an attached loop device."""
    devs = [
        Blk("vda", "254:0", 20 * GiB, serial="x2n-os"),
        Blk("vda1", "254:1", 20 * GiB, parent="vda", label="root"),
        Blk("sda", "8:0", 500 * GiB),
        Blk("sdb", "8:16", 32 * GiB),
        Blk("sr0", "11:0", 4 * GiB),
        Blk("nvme0n1", "259:0", 1000 * GiB),
        Blk("vdb", "254:16", 100 * GiB, serial="ro-disk"),
        Blk("vdc", "254:32", 100 * GiB, serial="busy"),
        Blk("vdc1", "254:33", 100 * GiB, parent="vdc", label="data"),
        Blk("loop0", "7:0", 0),
        Blk("loop1", "7:1", 777 << 20),
    ]
    mounts = (("254:1", "/", "ext4", "/dev/vda1"), ("254:33", "/srv", "xfs", "/dev/vdc1"))
    write_layout(root, Layout(tuple(devs), mounts))
    (root / "sys/block/vdb/ro").write_text("1\n")
    pci = "pci0000:00/0000:00:1f.2"
    serial = b"S5XXNG0N123456"
    _sysfs_disk(
        root,
        "sda",
        f"{pci}/ata1/host0/target0:0:0/0:0:0:0",
        {
            "device/type": "0\n",
            "device/model": "Samsung SSD 870 \n",
            "device/vpd_pg80": bytes([0, 0x80, 0, len(serial)]) + serial,
            "device/wwid": "naa.5002538E40A1B2C3\n",
        },
    )
    usb = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0"
    _sysfs_disk(root, "sdb", usb, {"device/type": "0\n", "device/model": "Flash Drive\n"})
    (root / "sys/block/sdb/removable").write_text("1\n")
    _sysfs_disk(root, "sr0", f"{pci}/ata2/host1/target1:0:0/1:0:0:0", {"device/type": "5\n"})
    nvme = {"device/serial": "  NVME-SER-1  \n", "wwid": "eui.0025388b71b2c3d4\n"}
    _sysfs_disk(root, "nvme0n1", "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0", nvme)
    for host, driver in (("host0", "ahci"), ("host1", "ata_piix"), ("host6", "usb-storage")):
        p = root / "sys/class/scsi_host" / host / "proc_name"
        p.parent.mkdir(parents=True)
        p.write_text(driver + "\n")
    return root


def test_list_disks_reads_sysfs_like_lsblk(tmp_path: Path) -> None:
    found = {d.path: d for d in diskselect.list_disks(auto_host(tmp_path))}
    assert sorted(found) == [
        "/dev/loop1",
        "/dev/nvme0n1",
        "/dev/sda",
        "/dev/sdb",
        "/dev/vda",
        "/dev/vdb",
        "/dev/vdc",
    ]  # no partitions, no CD-ROM, no empty loop device
    sda = found["/dev/sda"]
    assert (sda.transport, sda.kind, sda.size) == ("sata", "sata", 500 * GiB)
    assert (sda.serial, sda.wwn, sda.model) == (
        "S5XXNG0N123456",
        "0x5002538e40a1b2c3",
        "Samsung SSD 870",
    )
    assert (found["/dev/sdb"].transport, found["/dev/sdb"].removable) == ("usb", True)
    nvme = found["/dev/nvme0n1"]
    assert (nvme.transport, nvme.serial, nvme.wwn) == ("nvme", "NVME-SER-1", "eui.0025388b71b2c3d4")
    assert found["/dev/vdb"].readonly and found["/dev/vdc"].in_use and found["/dev/vda"].in_use
    assert found["/dev/loop1"].kind == "loop"


@pytest.mark.parametrize(
    "spec,chosen",
    [
        ("auto:type=sata", "/dev/sda"),
        ("auto:type=usb", "/dev/sdb"),
        ("auto:type=nvme,min-size=900G", "/dev/nvme0n1"),
        ("auto:serial=S5XXNG0N123456", "/dev/sda"),
        ("auto:wwn=0x5002538e40a1b2c3", "/dev/sda"),
        ("auto:model=samsung", "/dev/sda"),
        ("auto:name=sdb", "/dev/sdb"),
        ("auto:max-size=40G", "/dev/sdb"),  # the 777M loop device only when type=loop
        ("auto:type=loop,min-size=777M,max-size=777M", "/dev/loop1"),
    ],
)
def test_auto_chooses_exactly_one(tmp_path: Path, spec: str, chosen: str) -> None:
    said: List[str] = []
    assert diskselect.resolve_dest(spec, said.append, auto_host(tmp_path)) == chosen
    assert said and said[0].startswith(f"Selected disk {chosen} (") and spec in said[0]


@pytest.mark.parametrize(
    "spec,error",
    [
        ("auto:name=vda", "no disk matches 'auto:name=vda'"),  # holds /
        ("auto:name=vdc", "no disk matches"),  # mounted data
        ("auto:name=vdb", "no disk matches"),  # read-only
        ("auto:min-size=30G", "matches 3 disks (/dev/nvme0n1, /dev/sda, /dev/sdb); refusing"),
    ],
)
def test_auto_refusals(tmp_path: Path, spec: str, error: str) -> None:
    with pytest.raises(TargetError, match=error.replace("(", r"\(").replace(")", r"\)")):
        diskselect.choose_disk(spec, root=auto_host(tmp_path))


def test_auto_filter_syntax() -> None:
    assert diskselect.parse_auto("auto:type=nvme,,min-size=20G") == {
        "type": "nvme",
        "min-size": "20G",
    }
    assert diskselect.parse_size("20G") == 20 << 30 and diskselect.parse_size("512MiB") == 512 << 20
    with pytest.raises(UsageError, match="invalid auto: filter 'colour=red'") as e:
        diskselect.parse_auto("auto:colour=red")
    assert e.value.hint is not None and "min-size" in e.value.hint
    with pytest.raises(UsageError, match="invalid size 'big'"):
        diskselect.parse_size("big")
    assert diskselect.resolve_dest("/dev/sda", lambda m: None) == "/dev/sda"


def test_runs_on_python37(tmp_path: Path) -> None:
    """What the x2nestos zipapp bundles must run on old hosts' Python 3.7."""
    py37 = pyenv_python("3.7") or shutil.which("python3.7")
    require(py37 is not None, "needs a Python 3.7 interpreter")
    layout(tmp_path, "lvm2")
    code = (
        "import json, sys; from pathlib import Path; "
        "from nestos_installer import disks, diskselect; "
        "r = Path(sys.argv[1]); print(json.dumps([disks.root_disks(r), "
        "disks.resolve('vdb', r).holders, len(diskselect.list_disks(r))]))"
    )
    proc = subprocess.run(
        [
            str(py37),
            "-I",
            "-c",
            f"import sys; sys.path[:0] = [{str(REPO / 'installer')!r}]; {code}",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["/dev/vda", "/dev/vdb"], ["dm-0"], 2]


def test_disks_is_bundle_safe_and_blockdev_leaves_gpt_to_the_verb() -> None:
    """disks goes into the x2nestos zipapp: stdlib and errors only; blockdev never pulls in gpt
    (pyparted): install.py composes the blank table and the zeroed head."""
    pkg = REPO / "installer/nestos_installer"

    def imported(name: str) -> set:
        tree = ast.parse((pkg / name).read_text())
        out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        out |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        return out

    ours = {m for m in imported("disks.py") if m.split(".")[0] not in sys.stdlib_module_names}
    assert ours == {"nestos_installer.errors"}
    assert not any("gpt" in m for m in imported("blockdev.py"))
