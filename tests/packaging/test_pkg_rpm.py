"""rpmbuild -bb of packaging/rpm/nestos-installer.spec (via packaging/build.sh --rpm): the
binary packages hold every file of the install layout (installer.md §3.3).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from nestos_installer import __version__

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def files_of(rpm: Path) -> List[str]:
    proc = subprocess.run(
        ["rpm", "-qlp", str(rpm)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def rpm_named(built: Path, name: str) -> Path:
    found = [p for p in built.glob("*.noarch.rpm") if p.name.rsplit("-", 2)[0] == name]
    assert len(found) == 1, sorted(p.name for p in built.glob("*.rpm"))
    return found[0]


def test_main_package_layout(built: Path) -> None:
    files = set(files_of(rpm_named(built, "nestos-installer")))
    systemd = sorted((REPO / "packaging" / "systemd").iterdir())
    assert systemd, "packaging/systemd is empty"
    for src in systemd:
        if src.suffix in (".service", ".target"):
            assert f"/usr/lib/systemd/system/{src.name}" in files
        elif src.name == "nestos-installer-generator":
            assert "/usr/lib/systemd/system-generators/nestos-installer-generator" in files
        else:
            assert f"/usr/libexec/{src.name}" in files
    for path in (
        "/usr/bin/nestos-installer",
        "/usr/share/nestos-installer/example-config.yaml",
        "/usr/share/bash-completion/completions/nestos-installer",
        "/usr/share/zsh/site-functions/_nestos-installer",
        "/usr/share/fish/vendor_completions.d/nestos-installer.fish",
    ):
        assert path in files
    assert any(f.endswith("/site-packages/nestos_installer/cli/__init__.py") for f in files)
    assert any(f.endswith("/site-packages/nestos_stream/__init__.py") for f in files)
    assert not any("/x2nestos" in f for f in files)
    assert any(f.startswith("/usr/share/licenses/nestos-installer") for f in files)


def test_generator_mode_and_requires(built: Path) -> None:
    rpm = rpm_named(built, "nestos-installer")
    proc = subprocess.run(
        ["rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", str(rpm)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modes: Dict[str, str] = {}
    for line in proc.stdout.splitlines():
        perms, name = line.split(" ", 1)
        modes[name] = perms
    assert modes["/usr/lib/systemd/system-generators/nestos-installer-generator"] == "-rwxr-xr-x"
    assert modes["/usr/lib/systemd/system/nestos-installer.service"] == "-rw-r--r--"
    req = subprocess.run(
        ["rpm", "-qp", "--requires", str(rpm)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split("\n")
    for dep in (
        "gnupg2",
        "xz",
        "util-linux",
        "e2fsprogs",
        "python3-click",
        "python3-pycdlib",
        "python3-pyparted",
        "python3-gnupg",
    ):
        assert dep in req, dep
    arch = subprocess.run(
        ["rpm", "-qp", "--qf", "%{ARCH}", str(rpm)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert arch == "noarch"


def test_x2nestos_and_help_subpackages(built: Path) -> None:
    x2 = set(files_of(rpm_named(built, "x2nestos")))
    assert "/usr/bin/x2nestos" in x2
    assert any(f.endswith("/site-packages/x2nestos/cli.py") for f in x2)
    req = subprocess.run(
        ["rpm", "-qp", "--requires", str(rpm_named(built, "x2nestos"))],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "kexec-tools" in req.split("\n")
    assert f"nestos-installer = {__version__}-1" in req
    help_files = files_of(rpm_named(built, "nestos-installer-help"))
    pages = sorted(p.name for p in (built / "man").iterdir())
    assert (
        sorted(
            Path(f).name.removesuffix(".gz")
            for f in help_files
            if f.startswith("/usr/share/man/man8/")
        )
        == pages
    )


def test_versions_agree() -> None:
    spec = (REPO / "packaging" / "rpm" / "nestos-installer.spec").read_text()
    assert f"\nVersion:        {__version__}\n" in spec
    changelog = (REPO / "packaging" / "debian" / "changelog").read_text()
    assert changelog.startswith(f"nestos-installer ({__version__})")
