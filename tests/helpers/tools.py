"""Where the tests find the commands they drive: beside the interpreter that runs them.

The console scripts of the package live next to `sys.executable` in the virtualenv that runs
pytest, so a clone in any folder finds its own copy; never a path of one machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
