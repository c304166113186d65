"""Build x2nestos.pyz: one self-contained file that runs with a bare `python3` (>= 3.7).

Bundles the x2nestos package plus exactly the nestos_installer / nestos_stream modules it
imports (transitively), after checking that every bundled module imports only the standard
library or other bundled modules. Its __main__.py is entry.py, which answers Python < 3.7 with
one line. Usage: python packaging/zipapp/build_pyz.py [-o OUT]
"""

from __future__ import annotations

import argparse
import ast
import os
import stat
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[2]


def package_dir(name: str) -> Path:
    """A package's folder in the checkout: a top-level folder holds it under its import name."""
    found = [d for d in (REPO / name, *REPO.glob(f"*/{name}")) if (d / "__init__.py").is_file()]
    if len(found) != 1:
        raise SystemExit(f"cannot find the {name} package in {REPO}: {found}")
    return found[0]


PACKAGES = {name: package_dir(name) for name in ("x2nestos", "nestos_installer", "nestos_stream")}
THIRD_PARTY_OK = {"yaml", "pycdlib"}  # imported lazily inside try/except ImportError
DATA = {"nestos_installer": ["keys/*.asc", "keys/README"]}
# parseable by Python 2.7 and 3.6: they get one line saying what is needed, not a SyntaxError
MAIN = Path(__file__).with_name("entry.py")
EPOCH = (2020, 1, 1, 0, 0, 0)


def _stdlib() -> Set[str]:
    names = set(getattr(sys, "stdlib_module_names", ()))
    return names | set(sys.builtin_module_names) | {"__future__"}


def module_file(name: str) -> Path:
    top, *rest = name.split(".")
    base = PACKAGES[top].joinpath(*rest)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py"


def imports_of(path: Path, modname: str) -> List[str]:
    out = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def closure() -> Dict[str, Path]:
    """Project modules reachable from x2nestos, with their parents' __init__ files."""
    todo = [f"x2nestos.{p.stem}" for p in sorted(PACKAGES["x2nestos"].glob("*.py"))]
    todo.append("x2nestos")
    found: Dict[str, Path] = {}
    stdlib = _stdlib()
    problems = []
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = module_file(name)
        if not path.is_file():
            continue  # `from pkg import name` where name is not a module
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for imp in imports_of(path, name):
            top = imp.split(".")[0]
            if top in PACKAGES:
                todo.append(imp)
            elif top not in stdlib and top not in THIRD_PARTY_OK:
                problems.append(f"{name} imports {imp}, which is not in the standard library")
    if problems:
        raise SystemExit("cannot build a self-contained zipapp:\n  " + "\n  ".join(problems))
    return found


def build(out: Path) -> Path:
    mods = closure()
    if any(m.startswith("nestos_stream") for m in mods):  # bundle the whole small package
        for p in PACKAGES["nestos_stream"].rglob("*.py"):
            rel = p.relative_to(PACKAGES["nestos_stream"]).with_suffix("")
            mods[".".join(["nestos_stream", *rel.parts])] = p
    entries: Dict[str, bytes] = {"__main__.py": MAIN.read_bytes()}
    for name, path in mods.items():
        top = name.split(".")[0]
        rel = path.relative_to(PACKAGES[top])
        entries[f"{top}/{rel.as_posix()}"] = path.read_bytes()
    for pkg, globs in DATA.items():
        for g in globs:
            for p in sorted(PACKAGES[pkg].glob(g)):
                entries[f"{pkg}/{p.relative_to(PACKAGES[pkg]).as_posix()}"] = p.read_bytes()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for arc in sorted(entries):
                info = zipfile.ZipInfo(arc, date_time=EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, entries[arc])
    os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=REPO / "dist" / "x2nestos.pyz")
    args = ap.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    path = build(args.output)
    print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
