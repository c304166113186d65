"""`install` under the dead-man switch onto real loop disks (issue 17 item 4): every pre-write
check that fails leaves the disk byte for byte as it was and nothing claimed the first write;
a passing install claims it; an install that lost the claim to the deadline writes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from helpers.gpgkeys import TestKey
from helpers.httpserver import TestServer
from helpers.images import demo_artifacts  # noqa: F401  (session fixture)
from helpers.loopdev import loop_disk, read_at
from nestos_installer import deadman
from nestos_installer.deadman import DeadmanConfig, Guard, State, TargetIdentity
from nestos_installer.errors import BadSignature, FetchError, InstallFailed, SignatureMissing
from nestos_installer.fetch import FetchRetries
from nestos_installer.install import InstallConfig, install
from nestos_installer.prewrite import PrewriteFailed

pytestmark = [pytest.mark.root, pytest.mark.xdist_group("demo")]
MIB = 1 << 20
SIZE = 256 * MIB
OLD_OS = os.urandom(MIB)  # stands in for the old system's boot code and partition table


def _old_disk(dev: str) -> None:
    with open(dev, "r+b") as f:
        f.write(OLD_OS)
        f.flush()
        os.fsync(f.fileno())


def _guard(tmp_path: Path, dev: str, size: int = SIZE) -> Guard:
    return Guard(DeadmanConfig(60, TargetIdentity(dev, size), 64 * MIB), tmp_path / "run")


def _cfg(dev: str, **kw: object) -> InstallConfig:
    return InstallConfig(dest_device=dev, fetch_retries=FetchRetries(1), **kw)  # type: ignore[arg-type]


def test_guarded_install_claims_the_first_write(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    said: List[str] = []
    with loop_disk(tmp_path / "disk.img", SIZE) as dev:
        guard = _guard(tmp_path, dev)
        cfg = _cfg(dev, image_file=a.raw_xz, keyrings=(a.public_key,), ignition_file=a.ignition)
        install(cfg, said.append, guard)
        assert read_at(dev, 510, 2) == b"\x55\xaa"  # the image's protective MBR
    assert deadman.current(guard.run_dir) is State.WRITING
    assert any("before writing" in s for s in said), said  # the local image verified first
    assert any("is the planned disk" in s for s in said), said


@pytest.mark.parametrize("what", ["unreachable", "missing", "untrusted", "identity", "expired"])
def test_guarded_install_failure_writes_nothing(demo_artifacts, tmp_path, what):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "disk.img", SIZE) as dev:
        _old_disk(dev)
        guard = _guard(tmp_path, dev, SIZE + (MIB if what == "identity" else 0))
        url = srv.add("m.raw.xz", a.raw_xz)
        expected: type = FetchError
        if what == "unreachable":  # its signature cannot be fetched: a missing one
            url = "http://127.0.0.1:9/m.raw.xz"
            expected = SignatureMissing
        elif what == "missing":
            url = srv.url("gone.raw.xz")
        elif what == "untrusted":
            with TestKey.generate(tmp_path, "stranger") as other:
                srv.add("m.raw.xz.sig", other.sign(a.raw_xz))
            expected = BadSignature
        else:
            srv.add("m.raw.xz.sig", a.raw_xz_sig)
            expected = PrewriteFailed if what == "identity" else InstallFailed
            if what == "expired":
                deadman.claim(State.EXPIRED, guard.run_dir)
        with pytest.raises(expected):
            install(_cfg(dev, image_url=url, keyrings=(a.public_key,)), lambda m: None, guard)
        assert read_at(dev, 0, MIB) == OLD_OS
    assert guard.fail(what) is (State.EXPIRED if what == "expired" else State.CHECK_FAILED)
