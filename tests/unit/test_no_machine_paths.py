"""No tracked file names a path of one machine: a checkout, its virtualenv, a work or home folder.

Such a path passes on the machine that wrote it and fails in every other clone (issue: the CLI
tests once ran `<checkout>/.venv/bin/nestos-installer`). Tests find tools beside
`sys.executable` (helpers/tools.py) or from the repo root.
"""

from __future__ import annotations

import os
import re
import subprocess

from helpers.tools import REPO

# absolute paths that only exist on the machine that wrote them
MACHINE_PATH = re.compile(
    r"""(?<![\w.~$}])(?:
        /w(?:ork)/                              # this workplace's work folders
      | /home/[\w.-]+/(?:\.|[\w.-]+/)           # a user's home with something under it
      | /root/\.                                # root's dot folders: .venv, .pyenv, .cache ...
      | /tmp/bash_job[s]                        # a shell's job folders
      | /[\w./-]*/\.venv/                        # any absolute path into a virtualenv
    )""",
    re.VERBOSE,
)
# fake host trees and guests legitimately hold home directories of their own users
ALLOWED = re.compile(r"/home/(alice|bob|carol|core|nestos|user|admin)/")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def offending_lines(text: str, roots: list[str]) -> list[tuple[int, str]]:
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        if any(r in line for r in roots):
            hits.append((n, line.strip()))
            continue
        for m in MACHINE_PATH.finditer(line):
            if not ALLOWED.match(line, m.start()):
                hits.append((n, line.strip()))
                break
    return hits


def test_no_tracked_file_names_a_machine_path():
    # the checkout's own absolute path, in whichever folder it was cloned
    roots = [str(REPO) + "/"]
    home = os.path.expanduser("~")
    if home not in ("/", "/root"):
        roots.append(home + "/")
    problems = []
    for rel in tracked_files():
        path = REPO / rel
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        for n, line in offending_lines(data.decode("utf-8", "replace"), roots):
            problems.append(f"{rel}:{n}: {line[:120]}")
    assert not problems, "paths of one machine in tracked files:\n" + "\n".join(problems)


def test_the_check_catches_what_it_is_for():
    # assembled here so that this file itself holds none of them
    bad = [
        "NI = '" + "/".join(["", "work", "main", ".venv", "bin", "nestos-installer"]) + "'",
        "exe = '" + "/".join(["", "srv", "ci", "clone", ".venv", "bin", "python"]) + "'",
        "PYENV = '" + "/".join(["", "root", ".pyenv", "versions", "3.6.15"]) + "'",
        "cd " + "/".join(["", "home", "dev", "src", "nestos-installer"]),
    ]
    for line in bad:
        assert offending_lines(line, []), line
    good = [
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash",
        "root:x:0:0:root:/root:/bin/bash",
        "stamp=.venv/.installed-$(sha256sum pyproject.toml)",
        '[ -x "$repo/.venv/bin/python" ]',
        "Path(sys.executable).parent / 'nestos-installer'",
    ]
    for line in good:
        assert not offending_lines(line, []), line
    assert offending_lines("x = '/srv/clone/tests/a.py'", ["/srv/clone/"])
