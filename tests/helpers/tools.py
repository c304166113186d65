"""Where the tests find the commands they drive: beside the interpreter that runs them.

The console scripts of the package live next to `sys.executable` in the virtualenv that runs
pytest, so a clone in any folder finds its own copy; never a path of one machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    """Path of one of our console scripts in the environment running the tests."""
    exe = BIN / name
    if not exe.exists():
        raise FileNotFoundError(
            f"{name} is not installed beside {sys.executable}: run the README's test command"
        )
    return str(exe)


NESTOS_INSTALLER = console_script("nestos-installer")
X2NESTOS = console_script("x2nestos")


def package_dir(name: str) -> Path:
    """A package's folder in this checkout: a top-level folder holds it under its import name."""
    found = [d for d in (REPO / name, *REPO.glob(f"*/{name}")) if (d / "__init__.py").is_file()]
    if len(found) != 1:
        raise FileNotFoundError(f"cannot find the {name} package in {REPO}: {found}")
    return found[0]


def pyenv_python(version: str) -> Optional[str]:
    """The newest interpreter `X.Y` of pyenv's versions folder (old CPythons for old hosts).

    Found through PYENV_ROOT or `pyenv root`; None where pyenv or that version is absent."""
    import shutil
    import subprocess

    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        proc = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = proc.stdout.strip()
    if not root:
        return None
    found = sorted(
        Path(root).glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda p: [int(x) for x in p.parts[-3].split(".") if x.isdigit()],
    )
    return str(found[-1]) if found else None
