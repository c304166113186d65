"""packaging/build.sh builds the Ansible collection tarball beside its other outputs, and
`ansible-galaxy collection install` accepts it: the role, the playbook, the filters and the
declared ansible-core range are in what gets installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.ansible import COLLECTION_VERSION, ansible_tool, install_collection
from helpers.tools import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def test_build_sh_makes_an_installable_collection(tmp_path: Path) -> None:
    ansible_tool("ansible-galaxy")
    out = tmp_path / "dist"
    env = dict(os.environ, PYTHON=sys.executable, SOURCE_DATE_EPOCH="1700000000")
    proc = subprocess.run(
        [str(REPO / "packaging/build.sh"), "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarball = out / f"nestos-x2nestos-{COLLECTION_VERSION}.tar.gz"
    assert tarball.is_file() and (out / "x2nestos.pyz").is_file()
    coll = install_collection(tarball, tmp_path / "coll") / "ansible_collections/nestos/x2nestos"
    manifest = json.loads((coll / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"]) == ("nestos", "x2nestos")
    assert manifest["version"] == COLLECTION_VERSION
    for rel in (
        "roles/convert/tasks/main.yml",
        "roles/convert/defaults/main.yml",
        "playbooks/convert.yml",
        "plugins/filter/fleet.py",
        "README.md",
    ):
        assert (coll / rel).is_file(), rel
    runtime = (coll / "meta/runtime.yml").read_text()
    assert 'requires_ansible: ">=2.16.0,<2.20.0"' in runtime
    # the same range as the test extra that installs ansible-core
    assert '"ansible-core>=2.16,<2.20"' in (REPO / "pyproject.toml").read_text()
    assert not any(p.name == "results" for p in coll.rglob("*"))
