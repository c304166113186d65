"""`download` and `install --stream` against the demo stream served from 127.0.0.1: the
format follows the disk's sector size, and the stream's sha256 is enforced."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.httpserver import TestServer
from helpers.images import demo_artifacts  # noqa: F401
from helpers.loopdev import loop_disk, read_at

pytestmark = [pytest.mark.root, pytest.mark.xdist_group("demo")]
MIB = 1 << 20


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nestos_installer", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def serve_stream(srv: TestServer, a, tmp_path) -> str:  # type: ignore[no-untyped-def]
    for p in a.out_dir.iterdir():
        if p.is_file():
            srv.add(p.name, p)
    stream = a.write_stream(srv.url(""), dest=tmp_path / "demo.json")
    srv.add("streams/demo.json", stream.read_bytes())
    return srv.url("streams/")


def test_download_then_install_stream(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        base = serve_stream(srv, a, tmp_path)
        out = tmp_path / "dl"
        out.mkdir()
        for fmt in ("raw.xz", "4k.raw.xz", "iso", "pxe"):
            proc = cli(
                "download",
                "-s",
                "demo",
                "--stream-base-url",
                base,
                "-f",
                fmt,
                "-C",
                str(out),
                "--keyring",
                str(a.public_key),
            )
            assert proc.returncode == 0, (fmt, proc.stderr)
        names = sorted(p.name for p in out.iterdir())
        assert a.raw_xz.name in names and a.iso.name in names and a.pxe_kernel.name in names
        assert (out / a.raw_xz.name).read_bytes() == a.raw_xz.read_bytes()
        proc = cli("list-stream", "-s", "demo", "--stream-base-url", base)
        assert proc.returncode == 0 and "x86_64" in proc.stdout
        proc = cli(
            "install",
            "--stream",
            "demo",
            "--stream-base-url",
            base,
            "--keyring",
            str(a.public_key),
            "-i",
            str(a.ignition),
            dev,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Downloading NestOS demo x86_64 metal raw.xz image" in proc.stderr
        assert read_at(dev, 0, MIB) == a.raw.read_bytes()[:MIB]


def test_install_stream_picks_4k_image_for_4k_disk(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB, sector_size=4096) as dev:
        base = serve_stream(srv, a, tmp_path)
        proc = cli(
            "install",
            "--stream",
            "demo",
            "--stream-base-url",
            base,
            "--keyring",
            str(a.public_key),
            dev,
        )
        assert proc.returncode == 0, proc.stderr
        assert "metal 4k.raw.xz image" in proc.stderr
        assert read_at(dev, 4096, 8) == b"EFI PART"


def test_install_stream_sha256_enforced(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        serve_stream(srv, a, tmp_path)
        doc = json.loads((tmp_path / "demo.json").read_text())
        disk = doc["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.xz"]["disk"]
        disk["sha256"] = "0" * 64
        srv.add("streams/demo.json", json.dumps(doc).encode())
        proc = cli(
            "install",
            "--stream",
            "demo",
            "--stream-base-url",
            srv.url("streams/"),
            "--keyring",
            str(a.public_key),
            dev,
        )
        assert proc.returncode != 0
        assert "sha256 mismatch" in proc.stderr and "install failed" in proc.stderr
        assert read_at(dev, 0, MIB) == bytes(MIB)


def test_bad_stream_metadata_one_line(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        srv.add("streams/bad.json", b"<html>not json</html>")
        with open(dev, "r+b") as f:
            f.write(b"keep")
        proc = cli(
            "install",
            "--stream",
            "bad",
            "--stream-base-url",
            srv.url("streams/"),
            "--keyring",
            str(a.public_key),
            dev,
        )
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert lines[0].startswith("Error: ") and "stream metadata" in lines[0], lines
        assert len(lines) == 1
        assert read_at(dev, 0, 4) == b"keep"


def test_architecture_and_offline_errors(demo_artifacts, tmp_path):  # noqa: F811
    a = demo_artifacts
    with TestServer() as srv, loop_disk(tmp_path / "d.img", 256 * MIB) as dev:
        base = serve_stream(srv, a, tmp_path)
        with open(dev, "r+b") as f:
            f.write(b"keep")
        proc = cli(
            "install",
            "--stream",
            "demo",
            "--stream-base-url",
            base,
            "--architecture",
            "riscv64",
            "--keyring",
            str(a.public_key),
            dev,
        )
        assert proc.returncode != 0
        assert "riscv64" in proc.stderr and "x86_64" in proc.stderr  # says what exists
        proc = cli("install", "--offline", dev)
        assert proc.returncode != 0
        assert "cannot perform offline install" in proc.stderr
        assert read_at(dev, 0, 4) == b"keep"
