"""Issue 19 items 5, 6, 9, 11, 13 and 14, black-box: one installer-config schema for `install -c`
and `iso|pxe customize`, --dest-console checked, non-UTF-8 values refused, fetch errors in the
user's terms, --dest-ignition needs a device, --ignition-ca reaches the live installer."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.httpserver import TlsFiles
from helpers.refusal import check_refusal, run

NOT_UTF8 = os.fsdecode(b"x=\xff")


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("xorriso")
    return Path(build("nestos", str(tmp_path_factory.mktemp("iso"))))


def ok(argv: List[str], cwd: Path) -> str:
    proc = run(argv, cwd)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode()


def refused(argv: List[str], cwd: Path, why: str) -> None:
    proc = run(argv, cwd)
    check_refusal(proc, argv)
    assert why in proc.stderr.decode("utf-8", "backslashreplace"), proc.stderr.decode()
    assert not (cwd / "out.iso").exists()


def embedded_files(iso: Path, cwd: Path) -> Dict[str, bytes]:
    cfg = json.loads(run(["iso", "ignition", "show", str(iso)], cwd).stdout)
    out = {}
    for f in cfg["storage"]["files"]:
        src = f["contents"]["source"][len("data:;base64,") :]
        out[f["path"]] = gzip.decompress(base64.b64decode(src))
    return out


def test_one_schema_for_install_and_customize(iso: Path, tmp_path: Path) -> None:
    tls = TlsFiles.generate(tmp_path)
    nestos = tmp_path / "nestos.yaml"
    nestos.write_text(f"ignition-ca: [{tls.ca}]\nfirstboot-args: rd.neednet=1\n")
    ipl = tmp_path / "ipl.yaml"
    ipl.write_text("dest-device: /dev/vda\nsecure-ipl: true\n")
    ok(["iso", "customize", "--installer-config", str(nestos), "-o", "out.iso", str(iso)], tmp_path)
    assert (
        embedded_files(tmp_path / "out.iso", tmp_path)["/etc/nestos/installer.d/0000-nestos.yaml"]
        == nestos.read_bytes()
    )
    (tmp_path / "out.iso").unlink()
    refused(
        ["iso", "customize", "--installer-config", str(ipl), "-o", "out.iso", str(iso)],
        tmp_path,
        f"parsing installer config {ipl}: unknown key 'secure-ipl'",
    )
    refused(
        ["install", "--plan", "-c", str(ipl)], tmp_path, f"parsing config file {ipl}: unknown key"
    )
    assert (
        "first boot:  rd.neednet=1"
        in run(["install", "--plan", "-c", str(nestos), "/dev/vda"], tmp_path).stdout.decode()
    )


def test_dest_console_is_checked_as_install_checks_console(iso: Path, tmp_path: Path) -> None:
    why = "invalid or unsupported console argument: 'bogus'"
    refused(
        ["iso", "customize", "--dest-console", "bogus", "-o", "out.iso", str(iso)], tmp_path, why
    )
    refused(["install", "--plan", "--console", "bogus", "/dev/vda"], tmp_path, why)
    ok(
        ["iso", "customize", "--dest-console", "ttyS0,115200n8", "-o", "out.iso", str(iso)],
        tmp_path,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["iso", "kargs", "modify", "-a", NOT_UTF8, "-o", "out.iso", "{iso}"],
        ["iso", "customize", "--live-karg-append", NOT_UTF8, "-o", "out.iso", "{iso}"],
        ["iso", "customize", "--dest-karg-append", NOT_UTF8, "-o", "out.iso", "{iso}"],
        ["download", "-s", NOT_UTF8, "--stream-base-url", "http://127.0.0.1:9/"],
        ["list-stream", "-s", NOT_UTF8, "--stream-base-url", "http://127.0.0.1:9/"],
        ["install", "--plan", "--append-karg", NOT_UTF8, "/dev/vda"],
    ],
    ids=["kargs-modify", "live-karg", "dest-karg", "download", "list-stream", "install"],
)
def test_values_that_are_not_utf8(argv: List[str], iso: Path, tmp_path: Path) -> None:
    argv = [str(iso) if a == "{iso}" else a for a in argv]
    refused(argv, tmp_path, "not valid UTF-8: 'x=\\xff'")


def test_connection_refused_in_user_terms(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["list-stream", "--stream-base-url", f"http://127.0.0.1:{port}/"]
    proc = run(argv, tmp_path)
    check_refusal(proc, argv)
    assert proc.stderr.decode() == (
        f"Error: stream metadata fetch failed: cannot connect to 127.0.0.1:{port}: connection "
        f"refused (http://127.0.0.1:{port}/2403-LTS.json)\n"
    )


def test_dest_ignition_needs_a_device(iso: Path, tmp_path: Path) -> None:
    ign = tmp_path / "c.ign"
    ign.write_text('{"ignition": {"version": "3.4.0"}}')
    dev = tmp_path / "dev.yaml"
    dev.write_text("dest-device: /dev/vdb\n")
    base = ["iso", "customize", "--dest-ignition", str(ign), "-o", "out.iso"]
    refused([*base, str(iso)], tmp_path, "--dest-ignition needs a destination device")
    for extra in (
        ["--dest-device", "/dev/vda"],
        ["--installer-config", str(dev)],
        ["--live-karg-append", "nestos.inst.install_dev=/dev/vda"],
    ):
        ok([*base, *extra, str(iso)], tmp_path)
        (tmp_path / "out.iso").unlink()


def test_ignition_ca_reaches_the_live_installer(iso: Path, tmp_path: Path) -> None:
    tls = TlsFiles.generate(tmp_path)
    argv = ["iso", "customize", "--dest-device", "/dev/vda", "--ignition-ca", str(tls.ca)]
    ok([*argv, "-o", "out.iso", str(iso)], tmp_path)
    files = embedded_files(tmp_path / "out.iso", tmp_path)
    generated = yaml.safe_load(files["/etc/nestos/installer.d/0000-customize.yaml"])
    assert generated["ignition-ca"] == ["/etc/nestos/installer-ca/0000.pem"]
    assert files["/etc/nestos/installer-ca/0000.pem"] == tls.ca.read_bytes()
