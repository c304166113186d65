"""An SSH login to the host being converted: one multiplexed OpenSSH connection (ControlMaster
in a private 0700 directory) that x2nestos starts, runs commands over and stops.

Every ssh runs through nestos_installer.run; secrets travel on stdin, never on a command line.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Callable, List, Optional, Sequence, Tuple, cast

from nestos_installer import run as runner
from nestos_installer.errors import CommandFailed, NestosError, UsageError

# ssh's exit status when the connection itself failed (not the remote command)
SSH_FAILED = 255
# ssh options x2nestos sets itself: the user may not override them with --ssh-option
OWN_OPTIONS = ("controlpath", "controlmaster", "controlpersist")
# a host key check that would accept a changed key is never used for a conversion
LAX_CHECKING = ("no", "off", "false")
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]-]{1,253}$")
USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")


class SshError(NestosError):
    """The SSH connection failed (not a command run over it)."""


@dataclass(frozen=True)
class SshTarget:
    """--host [USER@]HOST with its --port, --identity, --ssh-option and --sudo."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[Path] = None
    options: Tuple[str, ...] = ()
    sudo: bool = False

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        port: Optional[int] = None,
        identity: Optional[Path] = None,
        options: Sequence[str] = (),
        sudo: bool = False,
    ) -> SshTarget:
        user, _, host = spec.rpartition("@")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or host.startswith("-") or not HOST_RE.fullmatch(host):
            raise UsageError(f"--host {spec!r}: not a host name or address")
        if user and not USER_RE.fullmatch(user):
            raise UsageError(f"--host {spec!r}: not a user name")
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--port {port}: not a TCP port")
        for opt in options:
            key = opt.split("=", 1)[0].split()[0].lower() if opt.strip() else ""
            if not key or "=" not in opt and len(opt.split()) < 2:
                raise UsageError(f"--ssh-option {opt!r}: expected Option=value")
            if key in OWN_OPTIONS:
                raise UsageError(f"--ssh-option {opt!r}: x2nestos manages {key} itself")
            if key == "stricthostkeychecking" and _value(opt).lower() in LAX_CHECKING:
                raise UsageError(
                    f"--ssh-option {opt!r}: a conversion never accepts a changed host key",
                    hint="use StrictHostKeyChecking=accept-new to accept a first contact",
                )
        return cls(host, user or None, port, identity, tuple(options), sudo)

    @property
    def name(self) -> str:
        """user@host as the user wrote it (for messages and results)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def as_user(self, user: str) -> SshTarget:
        return replace(self, user=user, sudo=False)

    def user_argv(self) -> List[str]:
        """The user's own connection options, as ssh takes them."""
        out: List[str] = []
        if self.port is not None:
            out += ["-p", str(self.port)]
        if self.identity is not None:
            out += ["-i", str(self.identity)]
        for opt in self.options:
            out += ["-o", opt]
        if self.user:
            out += ["-l", self.user]
        return out


def _value(opt: str) -> str:
    return re.split(r"[=\s]", opt.strip(), maxsplit=1)[-1].strip()


def remote_command(argv: Sequence[str], *, sudo: bool) -> str:
    """One command line for the remote shell: every word quoted; `sudo -n` (never a password
    prompt) in front when the login is not root."""
    words = (["sudo", "-n", "--"] if sudo else []) + list(argv)
    return " ".join(shlex.quote(w) for w in words)


def shell(script: str, *, sudo: bool) -> str:
    """A remote command running `script` (a short, non-secret sh snippet) with sh -c."""
    return remote_command(["sh", "-c", script], sudo=sudo)


# Our defaults come after the user's options, so theirs win (ssh keeps the first value seen).
DEFAULTS = (
    "BatchMode=yes",
    "ConnectTimeout=20",
    "ServerAliveInterval=10",
    "ServerAliveCountMax=6",
)


class Connection:
    """A ControlMaster connection to `target`; use as a context manager (stops the master).

    `first`: ssh options that must win over the user's (strict host key files for the live
    environment and the converted host); they come before everything else on the command line.
    """

    def __init__(
        self, target: SshTarget, control_dir: Path, name: str = "host", first: Sequence[str] = ()
    ) -> None:
        self.target = target
        self.control = control_dir / f"{name}.sock"
        self.log = control_dir / f"{name}.log"
        self.first = list(first)
        self.started = False

    def argv(self, *extra: str) -> List[str]:
        base = ["ssh", "-o", f"ControlPath={self.control}", *self.first]
        base += self.target.user_argv()
        for opt in DEFAULTS:
            base += ["-o", opt]
        return [*base, *extra]

    def start(self, timeout: float = 90) -> None:
        """Log in once; later commands reuse this connection (no new authentication)."""
        self.log.touch(mode=0o600)
        argv = self.argv("-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-E", str(self.log))
        argv += ["-N", "-f", "--", self.target.host]
        # the master forks into the background: its stdio must not be our pipes
        with open(os.devnull, "wb") as null:
            proc = runner.spawn(argv, stdin=runner.DEVNULL, stdout=null, stderr=null)
            try:
                rc = proc.wait(timeout=timeout)
            except runner.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = -1
        if rc != 0:
            raise SshError(
                f"cannot log in to {self.target.name} over SSH: {self.log_tail() or 'timed out'}",
                hint=_login_hint(self.log_tail()),
            )
        self.started = True

    def log_tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return "; ".join(lines[-3:])

    def key_refused(self) -> bool:
        """Whether the last login failed because the host's key is not the expected one."""
        tail = self.log_tail()
        return any(m in tail for m in CHANGED_KEY)

    def alive(self) -> bool:
        if not self.started:
            return False
        proc = runner.run(self.argv("-O", "check", "--", self.target.host), check=False, timeout=30)
        return proc.returncode == 0

    def stop(self) -> None:
        if self.started:
            try:  # the master answers on its local socket even when the host is gone
                runner.run(self.argv("-O", "exit", "--", self.target.host), check=False, timeout=30)
            except runner.TimeoutExpired:
                pass
            self.started = False
        for p in (self.control,):
            if p.exists():
                p.unlink()

    def __enter__(self) -> Connection:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command_argv(self, command: str) -> List[str]:
        return self.argv("-o", "ControlMaster=no", "-T", "--", self.target.host, command)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: Optional[bytes] = None,
        timeout: float = 120,
        check: bool = True,
        root: bool = True,
    ) -> runner.CompletedProcess[bytes]:
        """Run argv on the host (as root through sudo when --sudo and `root`)."""
        return self.run_shell(
            remote_command(argv, sudo=root and self.target.sudo),
            input=input,
            timeout=timeout,
            check=check,
        )

    def run_shell(
        self,
        command: str,
        *,
        input: Optional[bytes] = None,
        timeout: float = 120,
        check: bool = True,
    ) -> runner.CompletedProcess[bytes]:
        """Run a remote command line as given (already quoted)."""
        try:
            proc = runner.run(self.command_argv(command), input=input, timeout=timeout, check=False)
        except runner.TimeoutExpired as e:
            raise SshError(
                f"{self.target.name}: `{command[:80]}` timed out after {timeout:.0f}s"
            ) from e
        if proc.returncode == SSH_FAILED:
            tail = proc.stderr.decode(errors="replace").strip()[-300:]
            raise SshError(f"lost the SSH connection to {self.target.name}: {tail or 'no answer'}")
        if check and proc.returncode != 0:
            raise CommandFailed(
                ["ssh", self.target.name, command[:200]],
                proc.returncode,
                proc.stderr.decode(errors="replace")[-2000:],
            )
        return proc

    def text(self, argv: Sequence[str], *, timeout: float = 120, root: bool = True) -> str:
        return self.run(argv, timeout=timeout, root=root).stdout.decode(errors="replace").strip()

    def spawn(
        self, command: str, *, stdin: object = None, stdout: object = None, stderr: object = None
    ) -> runner.Popen[bytes]:
        """Start a remote command without waiting (streams in or out)."""
        return runner.spawn(self.command_argv(command), stdin=stdin, stdout=stdout, stderr=stderr)


CHANGED_KEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


def _login_hint(log: str) -> Optional[str]:
    if any(m in log for m in CHANGED_KEY):
        return "the host's key is not the one in your known_hosts; check it before converting"
    if "Permission denied" in log:
        return "log in by key (--identity, ssh-agent); x2nestos never asks for a password"
    return None


def wait_for_login(conn: Connection, deadline: float, poll: float = 5) -> bool:
    """Try to start `conn` until it succeeds or `deadline` (time.monotonic) passes."""
    return wait_for_any([conn], deadline, poll) is conn


def wait_for_any(
    conns: Sequence[Connection], deadline: float, poll: float = 5
) -> Optional[Connection]:
    """Try each of `conns` in turn (the same host, told apart by the host key each accepts)
    until one logs in: that one (started), or None once `deadline` (time.monotonic) passes."""
    while True:
        for conn in conns:
            try:
                conn.start(timeout=max(10.0, min(60.0, deadline - time.monotonic())))
                return conn
            except SshError:
                pass
        if time.monotonic() + poll >= deadline:
            return None
        time.sleep(poll)


def known_hosts(path: Path, alias: str, keys: Sequence[str]) -> List[str]:
    """Write a known_hosts file naming exactly `keys` for `alias`; the ssh options that check
    the host strictly against it (and nothing else)."""
    lines = [f"{alias} {' '.join(k.split()[:2])}\n" for k in keys]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    return [
        "-o", f"UserKnownHostsFile={path}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={alias}",
        "-o", "CheckHostIP=no",
        "-o", "UpdateHostKeys=no",
    ]  # fmt: skip


def keygen(path: Path, comment: str) -> Tuple[bytes, str]:
    """A fresh ed25519 key pair (private bytes, public line); the files are removed."""
    runner.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        timeout=60,
        reason="make the live environment's SSH host key",
    )
    try:
        return path.read_bytes(), Path(f"{path}.pub").read_text().strip()
    finally:
        for p in (path, Path(f"{path}.pub")):
            p.unlink()


def send(
    conn: Connection, command: str, write: Callable[[BinaryIO], object], timeout: float = 3600
) -> None:
    """Run `command` on the host with the bytes `write(stdin)` produces on its stdin (secrets
    travel this way, never on a command line)."""
    with tempfile.TemporaryFile() as err:
        proc = conn.spawn(command, stdin=runner.PIPE, stdout=runner.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            write(cast(BinaryIO, proc.stdin))
            proc.stdin.close()
            rc = proc.wait(timeout=timeout)
        except BrokenPipeError:
            rc = proc.wait(timeout=60)  # the far end gave up: its status and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    if rc == SSH_FAILED:
        raise SshError(f"lost the SSH connection to {conn.target.name}: {tail.strip()}")
    if rc != 0:
        raise CommandFailed(["ssh", conn.target.name, command[:200]], rc, tail)
