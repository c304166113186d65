"""SSH into booted test guests with the real `ssh`: keys generated per test, key logins only,
host keys checked against a known_hosts file in the test's temp dir (pinned or first-use), port
22 forwarded to a free 127.0.0.1 port (QEMU hostfwd), polling with a timeout.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from helpers.capabilities import require_qemu, require_tools
from nestos_demo.ssh import KeyPair, Login, SshError, generate_key, wait_for_login
from nestos_demo.vm import Vm, running

__all__ = ["Guest", "KeyPair", "booted", "generate_key", "host_key", "require_ssh"]

# ~90 s on an idle machine; the suite runs two boots at once on 2 cores, next to other work
LOGIN_TIMEOUT = 600


def require_ssh() -> None:
    require_qemu()
    require_tools("ssh", "ssh-keygen")


def host_key(directory: Path) -> tuple[str, str]:
    """A new ed25519 SSH host key for a guest: (private key text, public key line)."""
    pair = generate_key(directory, "root@nestos-test")
    return pair.private.read_text(), pair.public


@dataclass
class Guest:
    """A booted guest and the login into it."""

    vm: Vm
    login: Login
    boot_seconds: float

    def sh(self, command: str, timeout: float = 180) -> str:
        """stdout of `command` run over SSH; fails the test (with the console tail) if it fails."""
        try:
            proc = self.login.run(command, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{command}` timed out over SSH\n{self.console_tail()}")
        if proc.returncode != 0:
            pytest.fail(
                f"`{command}` over SSH exited {proc.returncode}: {proc.stderr}\n"
                f"{self.console_tail()}"
            )
        return proc.stdout

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.vm.serial().splitlines()[-lines:])

    def reboot(self, timeout: float = 300) -> None:
        """Reboot from inside; QEMU runs with -no-reboot, so the VM ends (boot the disk again)."""
        self.login.run("sudo systemctl reboot", timeout=60)
        assert self.vm.wait_exit(timeout), f"the guest did not reboot\n{self.console_tail()}"


@contextlib.contextmanager
def booted(
    disk: Path,
    key: KeyPair,
    workdir: Path,
    *,
    name: str,
    firmware: str = "uefi",
    user: str = "core",
    guest_addr: str = "",
    pinned_host_key: Optional[str] = None,
    **vm_options: Any,
) -> Iterator[Guest]:
    """Boot `disk` (written in place), wait for `user` to log in with `key`, yield the guest.

    `guest_addr`: the address the guest's sshd listens on (a static profile); `pinned_host_key`:
    the only host key to accept; `vm_options`: more of nestos_demo.vm.running's (kind, memory,
    extra_disks, kernel, initrd, append). The serial log stays in `workdir` as <name>.serial.
    """
    require_ssh()
    serial = workdir / f"{name}.serial"
    with running(
        disk, firmware=firmware, ssh_guest_addr=guest_addr, serial_log=serial, **vm_options
    ) as vm:
        login = Login(vm.ssh_port, user, key, workdir / f"{name}.known_hosts")
        if pinned_host_key is not None:
            login.pin_host_key(pinned_host_key)
        try:
            seconds = wait_for_login(login, LOGIN_TIMEOUT, alive=vm.alive)
        except SshError as e:
            tail = "\n".join(vm.serial().splitlines()[-60:])
            pytest.fail(f"{name}: {e}\n{vm.qemu_errors()}\n{tail}")
        cpu = vm.cpu_seconds()
        print(f"{name} ({firmware}): SSH login after {seconds:.1f}s (QEMU CPU {cpu:.0f}s)")
        yield Guest(vm, login, seconds)
