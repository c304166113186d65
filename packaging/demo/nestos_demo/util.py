"""Small helpers of the demo builder: running tools, the cache directory, hashing, file locks.

Packaging code, not the installer: it may use subprocess and fcntl directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Sequence, Union

StrPath = Union[str, "os.PathLike[str]"]


class BuildError(Exception):
    """A step of the demo build (or of `run`) failed; the message says which."""


def run(
    argv: Sequence[StrPath],
    *,
    env: Optional[Mapping[str, str]] = None,
    input: Optional[bytes] = None,
    stdout: Optional[IO[Any]] = None,
    cwd: Optional[StrPath] = None,
) -> bytes:
    """Run argv (no shell); return stdout, raise BuildError with the stderr tail on failure."""
    args = [os.fspath(a) for a in argv]
    if shutil.which(args[0]) is None and not os.path.exists(args[0]):
        raise BuildError(f"{args[0]} not found, needed by the demo builder")
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        args,
        input=input,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=None if cwd is None else os.fspath(cwd),
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-1500:]
        raise BuildError(f"{' '.join(args)} failed with status {proc.returncode}: {tail}")
    return proc.stdout if proc.stdout is not None else b""


def cache_root() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/nestos-installer, created on demand."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    root = Path(base) / "nestos-installer"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive flock on `path` (created if missing): serialises builders across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Steps:
    """Prints numbered, timed steps for a human following `python -m nestos_demo`."""

    def __init__(self, out: Optional[IO[str]] = None, quiet: bool = False) -> None:
        self.out = out if out is not None else sys.stdout
        self.quiet = quiet
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        self.say(f"==> {what}")
        yield
        self.say(f"    done in {time.monotonic() - start:.1f}s")


def package_dir(repo: Path, name: str) -> Path:
    """A package's folder in the checkout: a top-level folder holds it under its import name."""
    found = [d for d in (repo / name, *repo.glob(f"*/{name}")) if (d / "__init__.py").is_file()]
    if len(found) != 1:
        raise BuildError(f"cannot find the {name} package in {repo}: {found}")
    return found[0]
