"""The self-contained zipapp: built from the tree, run by a bare python3 in isolated mode with
no site-packages at all (-I -S), so nothing from any package index can be picked up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures.hostfacts.hosttree import build_host, build_pxe
from helpers.capabilities import require, require_tools

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "x2nestos.pyz"
    subprocess.run(
        [sys.executable, str(REPO / "packaging/zipapp/build_pyz.py"), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def python3() -> str:
    return shutil.which("python3") or sys.executable


def interpreters() -> list:
    """python3 plus the oldest supported Python (3.9) wherever this machine has one."""
    found = [python3()]
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.9.*/bin/python3.9"))
    for cand in [str(p) for p in pyenv] + [shutil.which("python3.9") or ""]:
        if cand and "shims" not in cand and Path(cand).is_file() and cand not in found:
            found.append(cand)
            break
    return found


def test_contents_are_stdlib_only(pyz: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names and "x2nestos/cli.py" in names
    assert "nestos_installer/errors.py" in names and "nestos_installer/run.py" in names
    assert not any(n.startswith("nestos_installer/cli") for n in names)  # click lives there
    for shared in ("nestos_stream/stream.py", "nestos_installer/stream.py", "x2nestos/urlfetch.py"):
        assert shared in names  # one stream loader for both tools, no fallback parser
    assert "nestos_installer/outputs.py" in names
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_help_in_isolated_mode(pyz: Path) -> None:
    for flags in (["-I"], ["-I", "-S"]):
        proc = subprocess.run(
            [python3(), *flags, str(pyz), "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage: x2nestos" in proc.stdout and "convert" in proc.stdout


@pytest.mark.parametrize("interp", interpreters())
def test_doctor_json_on_fake_root(pyz: Path, tmp_path: Path, interp: str) -> None:
    require_tools("cpio")
    build_host(tmp_path / "root")
    build_pxe(tmp_path / "pxe")
    ign = tmp_path / "u.ign"
    ign.write_text('{"ignition":{"version":"3.3.0"}}')
    proc = subprocess.run(
        [
            interp,
            "-I",
            "-S",
            str(pyz),
            "--root",
            str(tmp_path / "root"),
            "doctor",
            "--json",
            "--pxe",
            str(tmp_path / "pxe"),
            "-i",
            str(ign),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads(proc.stdout)
    assert d["ok"] and d["target"]["stable-path"] == "/dev/disk/by-id/virtio-x2n-test-disk"
    bad = subprocess.run(
        [
            interp,
            "-I",
            "-S",
            str(pyz),
            "--root",
            str(tmp_path / "root"),
            "convert",
            "--yes",
            "--build-only",
            "--iso",
            str(tmp_path / "no.iso"),
            "-i",
            str(ign),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[0].startswith("Error: artifacts: ISO ")


OLD_HOST = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from nestos_installer.errors import OutputExists
from nestos_installer.outputs import write_file
from nestos_installer.stream import load_stream, select_artifacts
class Transport:
    def get_bytes(self, url, *, max_size=1, what=""):
        assert url == "http://m/s/t.json", url
        art = {"location": "http://m/k?x=1"}
        fmt = {"pxe": {"kernel": art}}
        doc = {"stream": "t", "architectures": {"x86_64": {"artifacts": {"metal": {
            "release": "1", "formats": fmt}}}}}
        return json.dumps(doc).encode()
kernel = select_artifacts(load_stream(Transport(), "t", "http://m/s"), "x86_64", "metal", "pxe")
print(kernel["kernel"].location)
from nestos_stream import Artifact
print(Artifact.from_url(kernel["kernel"].location).signature)
dest = os.path.join(sys.argv[2], "out")
write_file(dest, b"x")
try:
    write_file(dest, b"y")
except OutputExists as e:
    print(e)
"""


def test_shared_modules_run_on_the_oldest_python(pyz: Path, tmp_path: Path) -> None:
    """Stream loading and outputs, as bundled, on Python 3.7 (openEuler 20.03, Debian 10)."""
    found = sorted(Path.home().glob(".pyenv/versions/3.7.*/bin/python3.7"))
    interp = str(found[0]) if found else shutil.which("python3.7")
    require(interp is not None, "needs a Python 3.7 interpreter")
    proc = subprocess.run(
        [str(interp), "-I", "-S", "-c", OLD_HOST, str(pyz), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "http://m/k?x=1",
        "http://m/k.sig?x=1",
        f"{tmp_path / 'out'} already exists; remove it or choose another name",
    ]
