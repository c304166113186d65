"""The one place that starts external programs: argv lists, never a shell.

Imports only `errors`. Failures become `CommandFailed` with a stderr tail; a missing program
becomes `ToolMissing` naming what it was needed for.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from typing import IO, Any, Mapping, Optional, Sequence, Union

from nestos_installer.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
Popen = subprocess.Popen
CompletedProcess = subprocess.CompletedProcess
TimeoutExpired = subprocess.TimeoutExpired

StrPath = Union[str, "os.PathLike[str]"]


def require_tool(name: str, reason: str) -> str:
    """Return the path of `name`, or raise ToolMissing saying what it was needed for."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found, needed to {reason}")
    return path


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def _tail(data: Union[bytes, str, None], limit: int = 2000) -> str:
    if data is None:
        return ""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return text[-limit:]


def run(
    argv: Sequence[StrPath],
    *,
    input: Optional[bytes] = None,
    capture: bool = True,
    check: bool = True,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    reason: Optional[str] = None,
    stdout: Optional[IO[Any]] = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion. stdout/stderr are captured (bytes) unless capture=False.

    `reason` is used in the ToolMissing message ("X not found, needed to <reason>").
    """
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdout=stdout if stdout is not None else (PIPE if capture else None),
            stderr=PIPE if capture else None,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissing(f"{args[0]} not found, needed to {reason or 'continue'}") from e
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, _tail(proc.stderr))
    return proc


def output(argv: Sequence[StrPath], **kwargs: Any) -> str:
    """Run argv and return its stdout as text."""
    return run(argv, **kwargs).stdout.decode()


def spawn(
    argv: Sequence[StrPath],
    *,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    env: Optional[Mapping[str, str]] = None,
    reason: Optional[str] = None,
    pass_fds: Sequence[int] = (),
    pipe_size: int = 0,
) -> subprocess.Popen[bytes]:
    """Start argv without waiting (for streaming filters such as xz or gpg).

    `pipe_size`: grow the stdin/stdout pipes to that many bytes (best effort). A stream of
    1 MiB writes through the default 64 KiB pipe costs 16 wake-ups of each side per write.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s &", " ".join(args))
    try:
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as e:
        raise ToolMissing(f"{args[0]} not found, needed to {reason or 'continue'}") from e
    if pipe_size:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                set_pipe_size(pipe.fileno(), pipe_size)
    return proc


def set_pipe_size(fd: int, size: int) -> None:
    """F_SETPIPE_SZ, best effort: the limit (/proc/sys/fs/pipe-max-size) may be lower."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError as e:
        log.debug("pipe size %d not granted: %s", size, e)


def check_exit(proc: subprocess.Popen[bytes], argv: Sequence[StrPath], stderr: bytes = b"") -> None:
    """Raise CommandFailed if a spawned process exited non-zero."""
    rc = proc.wait()
    if rc != 0:
        raise CommandFailed([os.fspath(a) for a in argv], rc, _tail(stderr))
