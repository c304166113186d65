"""`nestos-installer install` onto real loop disks: from a file and from a local HTTP server,
refusals before any write, and failure paths that must leave the disk unbootable."""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from helpers.capabilities import require_tools
from helpers.httpserver import TestServer
from helpers.images import demo_artifacts  # noqa: F401  (session fixture)
from helpers.loopdev import loop_disk, read_at

pytestmark = [pytest.mark.root, pytest.mark.xdist_group("demo")]
MIB = 1 << 20


def installer(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "nestos_installer", "install", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@contextmanager
def mounted_boot(dev: str) -> Iterator[Path]:
    part = f"{dev}p3"
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-o", "ro", part, mnt], check=True)
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def gpt_names(dev: str) -> List[str]:
    out = subprocess.run(["sfdisk", "--json", dev], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return [p.get("name", "") for p in json.loads(out.stdout)["partitiontable"]["partitions"]]


def bls_options(boot: Path) -> str:
    entry = sorted((boot / "loader" / "entries").glob("*.conf"))[-1]
    return next(ln for ln in entry.read_text().splitlines() if ln.startswith("options "))


def fill(dev: str, pattern: bytes, length: int = 2 * MIB) -> None:
    with open(dev, "r+b") as f:
        f.write((pattern * (length // len(pattern) + 1))[:length])
        f.flush()
        os.fsync(f.fileno())


def test_install_from_file(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        proc = installer(
            "--image-file",
            str(a.raw_xz),
            "--keyring",
            str(a.public_key),
            "--ignition-file",
            str(a.ignition),
            "--append-karg",
            "nestos.test=1",
            "--delete-karg",
            "panic=1",
            "--progress",
            "plain",
            dev,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Install complete." in proc.stderr
        assert "Verified signature" in proc.stderr
        # the Ignition config's content must never be logged
        assert "sshAuthorizedKeys" not in proc.stderr + proc.stdout
        assert gpt_names(dev) == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
        # the installed bytes up to the image size are exactly the image
        raw = a.raw.read_bytes()
        assert read_at(dev, 0, MIB) == raw[:MIB]
        with mounted_boot(dev) as boot:
            cfg = boot / "ignition" / "config.ign"
            assert cfg.read_bytes() == a.ignition.read_bytes()
            assert cfg.stat().st_mode & 0o777 == 0o600
            assert (boot / "ignition").stat().st_mode & 0o777 == 0o700
            opts = bls_options(boot)
            assert opts.endswith(" nestos.test=1")
            assert " panic=1" not in opts


def _unwritten_extents(path: Path) -> List[Tuple[int, int]]:
    """Byte ranges of `path` that its filesystem holds as allocated-but-unwritten extents
    (what fallocate ZERO_RANGE leaves: reads return zeros, no data was written)."""
    out = subprocess.run(
        ["filefrag", "-v", "-b4096", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+(\d+)\.\.\s*(\d+):", line)
        if m and "unwritten" in line:
            found.append((int(m.group(1)) * 4096, (int(m.group(2)) + 1) * 4096))
    return found


def test_zero_mibs_are_zeroed_by_the_disk_not_written(demo_artifacts, tmp_path):  # noqa: F811
    """Whole MiBs of zeros in the image go out as BLKZEROOUT (Write Zeroes; under a loop
    device: fallocate ZERO_RANGE of the backing file), not as written data, and still read
    back as zeros over a disk full of old data."""
    require_tools("filefrag")
    a = demo_artifacts
    raw = a.raw.read_bytes()
    zero_mibs = [i for i in range(len(raw) // MIB) if raw[i * MIB : (i + 1) * MIB] == bytes(MIB)]
    assert len(zero_mibs) >= 8, "the demo image has unused space"
    backing = tmp_path / "disk.img"
    with loop_disk(backing, 96 * MIB) as dev:
        fill(dev, b"old-data", 96 * MIB)
        assert _unwritten_extents(backing) == []
        proc = installer("-f", str(a.raw_xz), "--keyring", str(a.public_key), dev)
        assert proc.returncode == 0, proc.stderr
        assert read_at(dev, 0, len(raw)) == raw  # byte for byte, zeros included
        assert read_at(dev, len(raw), MIB) == b"old-data" * (MIB // 8)  # past the image: kept
    unwritten = _unwritten_extents(backing)
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(backing)], check=False, capture_output=True, text=True
    ).stdout.strip()
    assert unwritten, f"no unwritten extents in the loop file on {fs}: zeros were written"
    for i in zero_mibs[1:]:  # the first MiB is written last, by pwrite, with the rest of it
        assert any(lo <= i * MIB and (i + 1) * MIB <= hi for lo, hi in unwritten), i


def test_install_from_http(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        url = srv.add("img/metal.raw.xz", a.raw_xz)
        srv.add("img/metal.raw.xz.sig", a.raw_xz_sig)
        proc = installer(
            "--image-url",
            url,
            "--keyring",
            str(a.public_key),
            "--ignition-file",
            str(a.ignition),
            dev,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"Downloading image from {url}" in proc.stderr
        with mounted_boot(dev) as boot:
            assert (boot / "ignition" / "config.ign").read_bytes() == a.ignition.read_bytes()


def test_busy_disk_refused_naming_holder(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        installer("-f", str(a.raw_xz), "--keyring", str(a.public_key), dev, check=True)
        before = read_at(dev, 0, 2 * MIB)
        with mounted_boot(dev) as boot:
            proc = installer("-f", str(a.raw_xz), "--keyring", str(a.public_key), dev)
            assert proc.returncode != 0
            assert "found busy partitions" in proc.stderr
            assert f"{dev}p3 mounted on {boot}" in proc.stderr
        assert read_at(dev, 0, 2 * MIB) == before


def test_too_small_disk_refused_before_writing(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "small.img", 32 * MIB) as dev:
        fill(dev, b"untouched")
        proc = installer("-f", str(a.raw_xz), "--keyring", str(a.public_key), dev)
        assert proc.returncode != 0
        assert "larger than" in proc.stderr and "nothing was written" in proc.stderr
        assert "install failed" not in proc.stderr
        assert read_at(dev, 0, 2 * MIB) == (b"untouched" * (2 * MIB // 9 + 1))[: 2 * MIB]


def test_too_small_disk_over_http_stops_at_end_and_wipes(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "small.img", 32 * MIB) as dev:
        url = srv.add("m.raw.xz", a.raw_xz)
        srv.add("m.raw.xz.sig", a.raw_xz_sig)
        proc = installer("-u", url, "--keyring", str(a.public_key), dev)
        assert proc.returncode != 0
        assert "image is larger than" in proc.stderr and "install failed" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)


def test_dropped_connection_leaves_disk_unbootable(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        url = srv.add("m.raw.xz", a.raw_xz)
        srv.add("m.raw.xz.sig", a.raw_xz_sig)
        srv.behave("m.raw.xz", drop_after=3 * MIB)
        fill(dev, b"old-os")
        proc = installer("-u", url, "--keyring", str(a.public_key), dev)
        assert proc.returncode != 0
        assert "install failed" in proc.stderr
        assert "Resetting partition table" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)
        assert gpt_names(dev) == []


def test_dropped_connection_resumes_with_retries(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        url = srv.add("m.raw.xz", a.raw_xz)
        srv.add("m.raw.xz.sig", a.raw_xz_sig)
        srv.behave("m.raw.xz", drop_after=3 * MIB, drop_times=1)
        proc = installer("-u", url, "--keyring", str(a.public_key), "--fetch-retries", "2", dev)
        assert proc.returncode == 0, proc.stderr
        assert read_at(dev, 0, MIB) == a.raw.read_bytes()[:MIB]


def test_wrong_bytes_refused_and_disk_wiped(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        url = srv.add("m.raw.xz", a.raw_xz)
        srv.add("m.raw.xz.sig", a.raw_xz_sig)
        # a flipped byte inside the compressed data: xz or GPG must refuse it
        srv.behave("m.raw.xz", corrupt_at=a.raw_xz.stat().st_size // 2)
        proc = installer("-u", url, "--keyring", str(a.public_key), dev)
        assert proc.returncode != 0
        assert "install failed" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)


def _signed_image_with_appended_garbage(a, tmp_path) -> Dict[str, Path]:  # type: ignore[no-untyped-def]
    from helpers.gpgkeys import TestKey

    key = TestKey.generate(tmp_path, "appended")
    img = tmp_path / "garbage.raw.xz"
    img.write_bytes(a.raw_xz.read_bytes() + b"GARBAGE!")
    Path(f"{img}.sig").write_bytes(key.sign(img))
    return {"image": img, "key": key.public_key_path}


def test_trailing_garbage_refused_even_when_signed(demo_artifacts, tmp_path):  # noqa: F811
    files = _signed_image_with_appended_garbage(demo_artifacts, tmp_path)
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        proc = installer("-f", str(files["image"]), "--keyring", str(files["key"]), dev)
        assert proc.returncode != 0
        assert "found trailing data after compressed stream" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)


def test_unknown_key_refused_even_with_insecure(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        proc = installer("-f", str(a.raw_xz), "--insecure", dev)
        assert proc.returncode != 0
        assert "GPG verification failure" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)


def test_missing_signature_needs_insecure(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    img = tmp_path / "unsigned.raw.xz"
    img.write_bytes(a.raw_xz.read_bytes())
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        fill(dev, b"keep")
        proc = installer("-f", str(img), dev)
        assert proc.returncode != 0
        assert "--insecure not specified and signature not found" in proc.stderr
        assert read_at(dev, 0, 8) == b"keepkeep"  # refused before writing
        proc = installer("-f", str(img), "--insecure", dev)
        assert proc.returncode == 0, proc.stderr
        assert "skipping verification as requested" in proc.stderr


def test_preserve_on_error_keeps_what_was_written(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    from helpers.gpgkeys import TestKey

    other = TestKey.generate(tmp_path, "other")
    img = tmp_path / "img.raw.xz"
    img.write_bytes(a.raw_xz.read_bytes())
    Path(f"{img}.sig").write_bytes(other.sign(img))  # signed, but by a key we don't trust
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        # An earlier install's table, primary and backup: both must be gone before streaming.
        subprocess.run(["sfdisk", "-q", dev], input=b"label: gpt\n,64M\n", check=True)
        assert read_at(dev, 256 * MIB - 512, 8) == b"EFI PART"
        proc = installer("-f", str(img), "--keyring", str(a.public_key), "--preserve-on-error", dev)
        assert proc.returncode != 0
        assert "Preserving partition table as requested" in proc.stderr
        raw = a.raw.read_bytes()
        # everything after the first MiB is on disk; the first MiB was never committed
        assert read_at(dev, MIB, 4 * MIB) == raw[MIB : 5 * MIB]
        assert read_at(dev, 0, MIB) == bytes(MIB)
        assert read_at(dev, 256 * MIB - 33 * 512, 33 * 512) == bytes(33 * 512)  # no backup GPT


def test_not_a_block_device(tmp_path):
    f = tmp_path / "plain-file"
    f.write_bytes(b"x" * 4096)
    proc = installer("-f", "/nonexistent.raw.xz", str(f))
    assert proc.returncode != 0
    assert f"{f} is not a block device" in proc.stderr
    assert f.read_bytes() == b"x" * 4096


def test_invalid_ignition_refused_before_writing(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition": {"version": "3.3.0"}')
    with loop_disk(tmp_path / "disk.img", 256 * MIB) as dev:
        fill(dev, b"keep")
        proc = installer("-f", str(a.raw_xz), "--keyring", str(a.public_key), "-i", str(bad), dev)
        assert proc.returncode != 0
        assert "parsing specified Ignition config" in proc.stderr
        assert read_at(dev, 0, 8) == b"keepkeep"


def test_reader_stack_matches_raw_image(demo_artifacts):  # noqa: F811
    # sanity of the fixture itself: the signed .xz decompresses to the raw image
    a = demo_artifacts
    assert lzma.decompress(a.raw_xz.read_bytes()) == a.raw.read_bytes()
