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

from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host, build_pxe
from helpers.capabilities import require_tools

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
    ign.write_text(LOGIN_IGN)
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
