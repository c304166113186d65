"""The nestos.x2nestos collection as the tests use it: built with ansible-galaxy from
packaging/ansible, installed into a temp collections path, and ansible-playbook runs with a
private ANSIBLE_HOME. Test helper: drives ansible's commands; imports no code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from helpers.capabilities import require
from helpers.tools import BIN, REPO

COLLECTION_VERSION = "0.1.0"


def ansible_tool(name: str) -> str:
    """An ansible command beside the interpreter running the tests (the test extra), else on
    PATH; skip (a failure under NESTOS_TEST_STRICT) without it."""
    found = str(BIN / name) if (BIN / name).exists() else shutil.which(name)
    require(found is not None, f"needs {name} (ansible-core, pip install -e '.[test]')")
    assert found is not None
    return found


def ansible_env(tmp: Path, collections: Optional[Path] = None) -> Dict[str, str]:
    """Nothing of ~/.ansible is read or written; our venv's commands first on PATH."""
    env = dict(os.environ, ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_NOCOLOR="1")
    env.update(ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), ANSIBLE_RETRY_FILES_ENABLED="0")
    env["ANSIBLE_REMOTE_TMP"] = str(tmp / "ansible-remote-tmp")  # localhost's module files
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    return env


def install_collection(tarball: Path, dest: Path) -> Path:
    """`ansible-galaxy collection install` of a built tarball into `dest`: the collections path."""
    subprocess.run(
        [ansible_tool("ansible-galaxy"), "collection", "install", "-p", str(dest), str(tarball)],
        check=True,
        capture_output=True,
        env=ansible_env(dest.parent),
        timeout=120,
    )
    return dest


def build_collection(tmp: Path) -> Path:
    """The collection built from this checkout and installed; returns its collections path."""
    subprocess.run(
        [ansible_tool("ansible-galaxy"), "collection", "build", str(REPO / "packaging/ansible")]
        + ["--output-path", str(tmp)],
        check=True,
        capture_output=True,
        env=ansible_env(tmp),
        timeout=120,
    )
    tarball = tmp / f"nestos-x2nestos-{COLLECTION_VERSION}.tar.gz"
    return install_collection(tarball, tmp / "coll")


def playbook(
    env: Dict[str, str],
    inventory: Path,
    variables: Dict[str, Any],
    *args: str,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook -i INVENTORY nestos.x2nestos.convert -e @vars.json ARGS`."""
    vars_file = inventory.with_name("vars.json")
    vars_file.write_text(json.dumps(variables))
    argv: List[str] = [ansible_tool("ansible-playbook"), "-i", str(inventory)]
    argv += ["nestos.x2nestos.convert", "-e", f"@{vars_file}", *args]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
