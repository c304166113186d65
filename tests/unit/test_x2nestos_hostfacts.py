"""x2nestos host readers on fake root trees: memory, consoles, kexec/lockdown/Secure Boot,
containers, mounts and the target disk's identity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.hostfacts.hosttree import build_host
from nestos_installer.errors import TargetError
from x2nestos import disk, hostfacts


@pytest.fixture
def host(tmp_path: Path) -> Path:
    build_host(tmp_path)
    return tmp_path


def test_basic_facts(host: Path) -> None:
    mem = hostfacts.meminfo(host)
    assert mem["MemTotal"] == 4 << 30
    assert mem["MemAvailable"] == 3 << 30
    assert mem["HugePages_Total"] == 0
    assert hostfacts.machine_arch(host) == "x86_64"
    assert hostfacts.kernel_release(host) == "6.1.0-test"
    assert hostfacts.consoles(hostfacts.read_cmdline(host)) == ["tty0", "ttyS0,115200n8"]
    assert hostfacts.systemd_is_pid1(host)
    assert hostfacts.container(host) is None
    assert hostfacts.hypervisor(host) == "qemu"


def test_kexec_plain(host: Path) -> None:
    k = hostfacts.kexec_facts(host)
    assert k.supported and not k.loaded and not k.load_disabled
    assert k.lockdown == "none" and k.secure_boot is False
    assert k.possible and not k.use_file_load


@pytest.mark.parametrize(
    "opts,file_load,possible",
    [
        ({"secure_boot": True}, True, True),
        ({"lockdown": "integrity"}, True, True),
        ({"lockdown": "confidentiality", "secure_boot": None}, True, True),
        ({"kexec_disabled": True}, False, False),
        ({"kexec_supported": False}, False, False),
    ],
)
def test_kexec_variants(tmp_path: Path, opts: dict, file_load: bool, possible: bool) -> None:
    build_host(tmp_path, **opts)
    k = hostfacts.kexec_facts(tmp_path)
    assert k.use_file_load is file_load
    assert k.possible is possible


def test_secure_boot_absent_on_bios(tmp_path: Path) -> None:
    build_host(tmp_path, secure_boot=None)
    assert hostfacts.secure_boot(tmp_path) is None


def test_container_detection(tmp_path: Path) -> None:
    build_host(tmp_path, container="docker")
    assert hostfacts.container(tmp_path) == "docker"
    other = tmp_path / "lxc"
    build_host(other, container="lxc")
    assert hostfacts.container(other) == "lxc"


def test_mounts_unescape_and_lookup(tmp_path: Path) -> None:
    build_host(tmp_path, data_mount=True)
    table = hostfacts.mounts(tmp_path)
    targets = [m.target for m in table]
    assert "/srv/my data" in targets
    assert hostfacts.mount_of("/tmp/x", table).fstype == "tmpfs"  # type: ignore[union-attr]
    assert hostfacts.mount_of("/var/lib/x2nestos", table).fstype == "ext4"  # type: ignore
    assert hostfacts.mount_of("/boot/efi", table).target == "/boot"  # type: ignore


def test_disk_identity_from_sysfs(host: Path) -> None:
    t = disk.resolve("/dev/vda", host)
    assert t.stable_path == "/dev/disk/by-id/virtio-x2n-test-disk"
    assert t.by_id_source == "sysfs"
    assert t.size == 20 << 30
    assert [p.label for p in t.partitions] == ["root", "boot", "data"]
    assert ("/dev/vda1", "/", "ext4") in t.mounted
    assert t.data_mounts() == []
    assert disk.root_disk(host) == "vda"
    assert disk.resolve("vda", host).name == "vda"


def test_disk_identity_from_udev_links(host: Path) -> None:
    byid = host / "dev/disk/by-id"
    byid.mkdir(parents=True)
    os.symlink("../../vda", byid / "virtio-x2n-test-disk")
    os.symlink("../../vda1", byid / "virtio-x2n-test-disk-part1")
    os.symlink("../../vda", byid / "wwn-0x5000c500a1b2c3d4")
    t = disk.resolve("/dev/disk/by-id/virtio-x2n-test-disk", host)
    assert t.name == "vda"
    assert t.stable_path == "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"
    assert t.by_id_source == "udev"


def test_disk_rejects_partitions_and_unknown(host: Path) -> None:
    with pytest.raises(TargetError, match="partition of /dev/vda"):
        disk.resolve("/dev/vda1", host)
    with pytest.raises(TargetError, match="no such block device"):
        disk.resolve("/dev/sdz", host)


def test_data_mounts_and_saved_partitions(tmp_path: Path) -> None:
    build_host(tmp_path, data_mount=True)
    t = disk.resolve("/dev/vda", tmp_path)
    assert t.data_mounts() == [("/dev/vda3", "/srv/my data", "xfs")]
    assert t.data_mounts(("data",)) == []
