"""x2nestos host readers on fake root trees: memory, consoles, kexec/lockdown/Secure Boot,
containers (mounts and disks: test_disks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.hostfacts.hosttree import build_host
from x2nestos import hostfacts


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
