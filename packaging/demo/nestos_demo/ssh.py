"""SSH logins into demo guests with the real `ssh` client: an ed25519 key generated per use, key
authentication only (BatchMode, never a password), host keys checked against a known_hosts file
of the caller's own (pinned, or accepted on first use), and polling until the guest answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional


class SshError(Exception):
    """The guest never accepted the login (timeout, or the VM went away)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair: the private key file and the public key line."""

    private: Path
    public: str


def generate_key(directory: Path, comment: str = "nestos-demo") -> KeyPair:
    """A new ed25519 key without passphrase in `directory` (ssh-keygen)."""
    if shutil.which("ssh-keygen") is None:
        raise SshError("ssh-keygen not found, needed for the demo login (apt: openssh-client)")
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return KeyPair(private, private.with_name("id_ed25519.pub").read_text().strip())


@dataclass(frozen=True)
class Login:
    """How to log in to one guest: 127.0.0.1:`port` (QEMU's hostfwd) as `user` with `key`.

    `known_hosts` belongs to this guest: the first login records the host key there
    (StrictHostKeyChecking=accept-new) unless `pin_host_key` wrote it first, and every later
    login must see the same key.
    """

    port: int
    user: str
    key: KeyPair
    known_hosts: Path
    host: str = "127.0.0.1"

    def pin_host_key(self, public_line: str) -> None:
        """Accept only this host key (`ssh-ed25519 AAAA... comment`) for the guest."""
        kind, blob = public_line.split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n")

    def argv(self, command: str, connect_timeout: int = 60) -> List[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(self.key.private),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@{self.host}",
            command,
        ]

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `command` in the guest; ssh's status is 255 when the login itself failed."""
        return subprocess.run(
            self.argv(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )


def sshd_answers(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when an SSH server greets on host:port within `timeout` (its banner line).

    QEMU accepts the connection on the host side at once, even while the guest has no
    address yet; only the banner says that sshd itself is there.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_login(
    login: Login,
    timeout: float,
    alive: Optional[Callable[[], bool]] = None,
    interval: float = 2.0,
) -> float:
    """Wait until a real login (`true`) succeeds; return the seconds it took.

    Cheap banner probes first, so that a slow guest is neither flooded with logins nor
    left unnoticed for a whole ssh timeout. Raises SshError on timeout, when `alive()` turns
    false, or when the guest shows a host key other than the known one.
    """
    start = time.monotonic()
    last = "sshd never answered"
    while time.monotonic() - start < timeout:
        if alive is not None and not alive():
            raise SshError(f"the guest stopped before it accepted a login; last ssh error: {last}")
        if not sshd_answers(login.host, login.port):
            time.sleep(interval)
            continue
        try:
            proc = login.run("true", timeout=120)
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
            continue
        if proc.returncode == 0:
            return time.monotonic() - start
        last = proc.stderr.strip()[-300:]
        if "HOST IDENTIFICATION HAS CHANGED" in last or "Host key verification failed" in last:
            raise SshError(f"the guest's host key is not the expected one: {last}")
        time.sleep(interval)
    raise SshError(f"no SSH login within {timeout:.0f}s; last ssh error: {last}")
