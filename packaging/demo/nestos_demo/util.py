"""Small helpers of the demo builder: running tools, the cache directory, hashing, file locks.

Packaging code, not the installer: it may use subprocess and fcntl directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, TypeVar, Union

StrPath = Union[str, "os.PathLike[str]"]
T = TypeVar("T")


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


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temp directory beside `out` that becomes `out` when the block succeeds.

    The caller holds the lock on `out`; an old `out` is replaced, a failed build leaves nothing.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_stamp(out: Path, digest: str, stamp: str = "manifest.json") -> Optional[Dict[str, Any]]:
    """The JSON stamp of a finished build in `out`, if it is the build of `digest`."""
    try:
        data = json.loads((out / stamp).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("input_hash") != digest:
        return None
    return data


def cached_build(
    out: Path,
    load: Callable[[Path], Optional[T]],
    fill: Callable[[Path], None],
    steps: Steps,
    what: str,
) -> T:
    """`load(out)` if it finds a finished build, else `fill` a staging dir that becomes `out`.

    Serialised across processes by a lock beside `out`; refuses to replace a directory that
    holds something other than a build (no manifest.json).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):
        done = load(out)
        if done is not None:
            steps.say(f"==> {what} up to date in {out}")
            return done
        if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
            raise BuildError(f"{out} exists and is not a build directory; not overwriting it")
        with staging_dir(out) as tmp:
            fill(tmp)
    done = load(out)
    if done is None:
        raise BuildError(f"build finished but {out}/manifest.json is unreadable")
    return done


def prune_builds(cache: Path, keep: int, stamp: str = "manifest.json") -> None:
    """Drop all but the `keep` newest build directories in `cache` (those holding `stamp`)."""
    builds = sorted(
        (d for d in cache.iterdir() if d.is_dir() and (d / stamp).exists()),
        key=lambda d: (d / stamp).stat().st_mtime,
        reverse=True,
    )
    for old in builds[keep:]:
        with file_lock(cache / f".{old.name}.lock"):
            shutil.rmtree(old, ignore_errors=True)


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
