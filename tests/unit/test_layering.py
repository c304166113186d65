"""The import rules of ../shared/STYLE.md, checked with `ast` on every module.

Direction: x2nestos -> nestos_installer -> nestos_stream, and inside a tool
cli -> verbs -> concepts -> {run, fetch, blockdev, kexec} -> errors. A module imports only its
own layer or lower ones, never cli, never in a cycle, never by string. Library ownership: only
run.py imports subprocess, only fetch.py requests, only cli/ click, only blockdev.py and
x2nestos/kexec.py fcntl (ioctls).

The check is a function over a tree of packages so that the test of the test can inject bad
imports into a copy and watch it fail.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.tools import package_dir

PACKAGES = ("nestos_stream", "nestos_installer", "x2nestos")  # lowest first

# Layer of a module inside its tool; modules not named here are concepts (2).
ERRORS, INFRA, CONCEPT, VERB, CLI = range(5)
LAYER_NAMES = {
    ERRORS: "errors",
    INFRA: "infrastructure",
    CONCEPT: "concept",
    VERB: "verb",
    CLI: "cli",
}
LAYERS = {
    "nestos_installer.errors": ERRORS,
    "nestos_installer.run": INFRA,
    "nestos_installer.fetch": INFRA,
    "nestos_installer.blockdev": INFRA,
    "nestos_installer.disks": INFRA,
    "x2nestos.kexec": INFRA,
    "nestos_installer.install": VERB,
    "nestos_installer.download": VERB,
    "nestos_installer.autoinstall": VERB,
    "nestos_installer.live.isoops": VERB,
    "nestos_installer.live.pxeops": VERB,
    "nestos_installer.live.customize": VERB,
    "nestos_installer.live.miniso": VERB,
    "x2nestos.convert": VERB,
    "x2nestos.plan": VERB,
    "x2nestos.remote": VERB,
}
# who may own which library
OWNERS = {
    "subprocess": {"nestos_installer.run"},
    "requests": {"nestos_installer.fetch"},
    "urllib3": {"nestos_installer.fetch"},
    "fcntl": {"nestos_installer.blockdev", "nestos_installer.run", "x2nestos.kexec"},
}
STRING_IMPORTS = {"import_module", "__import__"}


def layer(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) > 1 and (parts[1] in ("cli", "__main__")):
        return CLI
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    return CONCEPT


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    out = {}
    for pkg, base in roots.items():
        for p in sorted(base.rglob("*.py")):
            parts = [pkg, *p.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import, lazy ones inside functions included; a
    `from a import b` yields both `a` and `a.b`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for a in node.names:
                yield f"{node.module}.{a.name}", node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield "<relative>", node.lineno
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in STRING_IMPORTS:
                yield "<by string>", node.lineno


def edges(roots: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module graph over project modules, plus problems with library ownership."""
    mods = modules(roots)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    problems = []
    for mod, path in mods.items():
        for name, line in imports(path):
            where = f"{mod} (line {line})"
            if name == "<relative>":
                problems.append(f"{where}: relative import; use the absolute name")
                continue
            if name == "<by string>":
                problems.append(f"{where}: imports a module by string")
                continue
            top = name.split(".")[0]
            owners = OWNERS.get(top)
            if owners is not None and mod not in owners and layer(mod) != CLI:
                problems.append(f"{where}: imports {top}, which only {sorted(owners)} may")
            if top == "click" and layer(mod) != CLI:
                problems.append(f"{where}: imports click outside cli")
            if name in mods and name != mod and not mod.startswith(name + "."):
                graph[mod].add(name)
    return graph, problems


def direction_problems(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for mod, deps in graph.items():
        src_pkg = PACKAGES.index(mod.split(".")[0])
        for dep in sorted(deps):
            dst_pkg = PACKAGES.index(dep.split(".")[0])
            edge = f"{mod} -> {dep}"
            if dst_pkg > src_pkg:
                problems.append(f"{edge}: {PACKAGES[src_pkg]} must not import {PACKAGES[dst_pkg]}")
            elif layer(dep) == CLI and layer(mod) != CLI:
                problems.append(f"{edge}: nothing outside cli imports cli")
            elif dst_pkg == src_pkg and layer(dep) > layer(mod):
                problems.append(
                    f"{edge}: a {LAYER_NAMES[layer(mod)]} imports a "
                    f"{LAYER_NAMES[layer(dep)]} (upward)"
                )
    return problems


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append("import cycle: " + " -> ".join(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(roots: dict[str, Path]) -> list[str]:
    graph, problems = edges(roots)
    return problems + direction_problems(graph) + cycles(graph)


def repo_roots() -> dict[str, Path]:
    return {pkg: package_dir(pkg) for pkg in PACKAGES}


def test_layering_rules():
    problems = check(repo_roots())
    assert not problems, "\n".join(problems)


def test_errors_is_a_leaf():
    graph, _ = edges(repo_roots())
    assert graph["nestos_installer.errors"] == set()


@pytest.mark.parametrize(
    ("module", "line", "edge"),
    [
        (
            "nestos_installer/errors.py",
            "from nestos_installer import install",
            "nestos_installer.errors -> nestos_installer.install",
        ),
        (
            "nestos_installer/fetch.py",
            "from nestos_installer import download",
            "nestos_installer.fetch -> nestos_installer.download",
        ),
        ("x2nestos/kexec.py", "from x2nestos import cli", "x2nestos.kexec -> x2nestos.cli"),
        (
            "nestos_stream/stream.py",
            "import nestos_installer.errors",
            "nestos_stream.stream -> nestos_installer.errors",
        ),
        (
            "nestos_installer/gpt.py",
            "import importlib\nimportlib.import_module('x2nestos')",
            "nestos_installer.gpt (line",
        ),
        ("nestos_installer/ignition.py", "import subprocess", "nestos_installer.ignition (line"),
    ],
)
def test_the_check_fails_on_bad_imports(tmp_path, module, line, edge):
    roots = {}
    for pkg, src in repo_roots().items():
        roots[pkg] = tmp_path / pkg
        shutil.copytree(src, roots[pkg], ignore=shutil.ignore_patterns("__pycache__"))
    assert check(roots) == []
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    problems = check(roots)
    assert any(p.startswith(edge) for p in problems), problems


def test_a_cycle_is_named(tmp_path):
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert cycles(graph) == ["import cycle: a.x -> a.y -> a.z"]
