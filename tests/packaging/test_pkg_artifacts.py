"""Build outputs of packaging/build.sh: man pages for every command, completions, the wheel
in a clean venv, the zipapp under an isolated python3, and the example install config.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import click
import pytest

from nestos_installer.cli import cli as installer_cli
from nestos_installer.config import ALL_KEYS, parse_file
from x2nestos.cli import parser as x2nestos_parser

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def click_commands(cmd: click.Command, path: List[str]) -> List[List[str]]:
    out = [path]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                out += click_commands(sub, [*path, name])
    return out


def argparse_commands(p: argparse.ArgumentParser, path: List[str]) -> List[List[str]]:
    out = [path]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += argparse_commands(sub, [*path, name])
    return out


def test_man_page_for_every_command(built: Path) -> None:
    cmds = click_commands(installer_cli, ["nestos-installer"])
    cmds += argparse_commands(x2nestos_parser(), ["x2nestos"])
    assert ["nestos-installer", "iso", "customize"] in cmds  # the walk reaches leaves
    assert ["x2nestos", "doctor"] in cmds
    expected = {"-".join(c) + ".8" for c in cmds}
    assert {p.name for p in (built / "man").iterdir()} == expected
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8")
    for cmd in cmds:
        page = built / "man" / ("-".join(cmd) + ".8")
        proc = subprocess.run(
            ["man", "-l", str(page)],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        text = re.sub(r".\x08", "", proc.stdout)
        assert "SYNOPSIS" in text and " ".join(cmd) in text, page.name
        assert proc.stderr == "", f"{page.name}: {proc.stderr}"


def test_install_page_lists_options(built: Path) -> None:
    text = (built / "man" / "nestos-installer-install.8").read_text()
    assert text.startswith('.TH "NESTOS-INSTALLER-INSTALL" "8"')
    for key in ("image-url", "append-karg", "copy-network"):
        assert f"\\-\\-{key.replace('-', chr(92) + '-')}" in text, key


def test_completions(built: Path) -> None:
    comp = built / "completions"
    bash = (comp / "nestos-installer.bash").read_text()
    assert "_NESTOS_INSTALLER_COMPLETE=bash_complete" in bash
    assert (
        "compdef _nestos_installer_completion nestos-installer"
        in (comp / "nestos-installer.zsh").read_text()
    )
    assert (
        "complete --no-files --command nestos-installer"
        in (comp / "nestos-installer.fish").read_text()
    )
    # the bash script completes subcommands through the installed entry point
    env = dict(
        os.environ,
        COMP_WORDS="nestos-installer is",
        COMP_CWORD="1",
        _NESTOS_INSTALLER_COMPLETE="bash_complete",
    )
    proc = subprocess.run(
        [sys.executable, "-c", "from nestos_installer.cli import main; main()"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plain,iso" in proc.stdout.split()


def test_wheel_in_clean_venv(built: Path, tmp_path: Path) -> None:
    wheels = sorted(built.glob("nestos_installer-*-py3-none-any.whl"))
    sdists = [p for p in built.glob("nestos[-_]installer-*.tar.gz") if "-full" not in p.name]
    assert len(wheels) == 1 and len(sdists) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheels[0])],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    ls = subprocess.run(
        [str(venv / "bin" / "nestos-installer"), "list-stream", "-h"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ls.returncode == 0 and "Usage: nestos-installer list-stream" in ls.stdout, ls.stderr
    doc = subprocess.run(
        [str(venv / "bin" / "x2nestos"), "doctor", "-h"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doc.returncode == 0 and "usage: x2nestos doctor" in doc.stdout, doc.stderr
    # the installed code is the wheel's, not this checkout's
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import nestos_installer; print(nestos_installer.__file__)",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv)), where.stdout


def test_zipapp_isolated(built: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", str(built / "x2nestos.pyz"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: x2nestos")


def test_example_config_has_every_key(tmp_path: Path) -> None:
    text = (REPO / "packaging" / "example-config.yaml").read_text()
    uncommented = re.sub(r"^# ((?:[a-z-]+:)|(?:  - ))", r"\1", text, flags=re.M)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(uncommented)
    parsed = parse_file(cfg)
    assert sorted(parsed) == sorted(ALL_KEYS)
    assert parsed["dest-device"] == "/dev/vda" and parsed["console"] == ["ttyS0,115200n8"]
    # as shipped (all commented) it is an empty, valid config
    assert parse_file(REPO / "packaging" / "example-config.yaml") == {}
