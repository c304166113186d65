"""The import rules of ../shared/STYLE.md, checked with `ast` on every module.

x2nestos -> nestos_installer -> nestos_stream; nothing imports cli; only run.py imports
subprocess; only fetch.py imports requests; only cli/ imports click; only blockdev.py and
x2nestos/kexec.py use ioctls or mount.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKGS = {
    "installer/nestos_installer": "nestos_installer",
    "x2nestos": "x2nestos",
    "stream-metadata/nestos_stream": "nestos_stream",
}


def modules():
    for d, pkg in PKGS.items():
        for p in sorted((ROOT / d).rglob("*.py")):
            rel = p.relative_to(ROOT / d).with_suffix("")
            yield pkg, ".".join([pkg, *rel.parts]), p


def imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for a in node.names:
                yield f"{node.module}.{a.name}"


def test_layering_rules():
    problems = []
    for pkg, mod, path in modules():
        names = set(imports(path))
        top = {n.split(".")[0] for n in names}
        # __main__ modules are entry points: they sit above cli like the console scripts.
        in_cli = (
            mod.startswith("nestos_installer.cli")
            or mod.startswith("x2nestos.cli")
            or mod.endswith(".__main__")
        )
        if pkg == "nestos_stream" and top & {"nestos_installer", "x2nestos"}:
            problems.append(f"{mod}: nestos_stream must not import the tools")
        if pkg == "nestos_installer" and "x2nestos" in top:
            problems.append(f"{mod}: nestos_installer must not import x2nestos")
        if not in_cli and any(
            n == "nestos_installer.cli" or n.startswith("nestos_installer.cli.") for n in names
        ):
            problems.append(f"{mod}: nothing outside cli may import cli")
        if "subprocess" in top and mod != "nestos_installer.run":
            problems.append(f"{mod}: only run.py imports subprocess")
        if "requests" in top and mod != "nestos_installer.fetch":
            problems.append(f"{mod}: only fetch.py imports requests")
        if "click" in top and not in_cli:
            problems.append(f"{mod}: only cli imports click")
        # run.py: F_SETPIPE_SZ on the pipes of the processes it starts (no ioctl).
        if "fcntl" in top and mod not in (
            "nestos_installer.blockdev",
            "nestos_installer.run",
            "x2nestos.kexec",
        ):
            problems.append(f"{mod}: only blockdev.py / x2nestos/kexec.py use ioctls")
    assert not problems, "\n".join(problems)
