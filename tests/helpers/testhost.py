"""A disk-booted test host (fixtures/testhost) running under QEMU, reached by SSH on a forwarded
127.0.0.1 port with strict host-key checking: start it on per-test overlays, run commands, copy
files, stop it. Test helper: drives ssh, qemu-img and qemu directly; imports no code under test.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from fixtures.testhost.build import HostImage
from nestos_demo.qemu import accel_args

LOCALHOST = "127.0.0.1"
DHCP_ADDRESS = "10.0.2.15"  # what QEMU's user network leases first
RUNTIME_ADDRESS = "10.0.2.50/24"  # the runtime-net variant's address (no file on disk has it)
GATEWAY = "10.0.2.2"
MAC = "52:54:00:12:34:56"
FIRST_MIB = "head -c 1048576 /dev/vda | sha256sum"  # the boot disk's boot code and partition table
FW_CFG_NET = "opt/org.nestos.testhost/net"  # read by the runtime-net variant's oneshot unit
Command = Union[str, Sequence[str]]


class HostError(Exception):
    """The test host did not start, did not answer on SSH, or a command on it failed."""


@dataclass(frozen=True)
class SshTarget:
    """One SSH login with strict host-key checking against a known_hosts file of our own."""

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path

    def options(self) -> List[str]:
        """ssh/scp options (no user config, no agent, no prompt, no other known_hosts)."""
        return [
            "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=6",
            "-o", "LogLevel=ERROR",
            "-i", str(self.identity),
            "-p", str(self.port),
        ]  # fmt: skip

    def argv(self, command: Command) -> List[str]:
        """The ssh command line running `command` (a shell string, or argv quoted for sh)."""
        text = command if isinstance(command, str) else shlex.join(command)
        return ["ssh", *self.options(), f"{self.user}@{self.host}", "--", text]

    def run(
        self,
        command: Command,
        *,
        input: Optional[bytes] = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `command` on the host; HostError on a non-zero status when `check`."""
        proc = subprocess.run(
            self.argv(command), input=input, capture_output=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise HostError(
                f"{self.user}@{self.host}:{self.port} `{command}` exited {proc.returncode}: "
                + proc.stderr.decode(errors="replace")[-1500:]
            )
        return proc

    def text(self, command: Command, timeout: float = 120) -> str:
        """stdout of `command` as text, stripped."""
        return self.run(command, timeout=timeout).stdout.decode().strip()

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Copy bytes to `path` on the host (ssh + cat, no sftp needed)."""
        q = shlex.quote(path)
        self.run(f"umask 077 && cat > {q} && chmod {mode:o} {q}", input=data)

    def read_file(self, path: str) -> bytes:
        return self.run(["cat", "--", path]).stdout


def write_known_hosts(path: Path, host: str, port: int, keys: Sequence[str]) -> Path:
    """A known_hosts file naming exactly `keys` (`type base64`) for host:port."""
    name = host if port == 22 else f"[{host}]:{port}"
    path.write_text("".join(f"{name} {k}\n" for k in keys))
    return path


def served_host_keys(port: int, host: str = LOCALHOST, key_type: str = "ed25519") -> List[str]:
    """The host keys of `key_type` an SSH server really answers with (`type base64`)."""
    proc = subprocess.run(
        ["ssh-keyscan", "-T", "60", "-t", key_type, "-p", str(port), host],
        capture_output=True,
        timeout=120,
        check=False,
    )
    lines = proc.stdout.decode().splitlines()
    return sorted(" ".join(ln.split()[1:3]) for ln in lines if ln and not ln.startswith("#"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


class HostVM:
    """One test host on overlays in `workdir` (kept across restarts). `with vm.running():`
    boots it and always ends it.

    guest_forwards: ("10.0.2.100:80", host_port) pairs: the guest reaches 127.0.0.1:host_port
    at that address. restrict: the guest reaches nothing else (and DHCP gives no router).
    """

    def __init__(
        self,
        image: HostImage,
        workdir: Path,
        *,
        memory: int = 1024,
        guest_forwards: Sequence[Tuple[str, int]] = (),
        extra_disks: Sequence[Path] = (),
        restrict: bool = False,
    ) -> None:
        self.image = image
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.memory = memory
        self.guest_forwards = tuple(guest_forwards)
        self.extra_disks = tuple(extra_disks)
        self.restrict = restrict
        self.serial_log = workdir / "serial.log"
        self.known_hosts = workdir / "known_hosts"
        self.port = 0
        self.boot_seconds = 0.0
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def address(self) -> str:
        """The guest address the SSH port forwards to."""
        if self.image.variant.runtime_net:
            return RUNTIME_ADDRESS.split("/")[0]
        return DHCP_ADDRESS

    @property
    def host_key(self) -> str:
        """The host's own ed25519 public key (`ssh-ed25519 base64`), recorded at build time."""
        return next(k for k in self.image.host_keys if k.startswith("ssh-ed25519 "))

    def target(self, user: str = "root") -> SshTarget:
        return SshTarget(LOCALHOST, self.port, user, self.image.identity(user), self.known_hosts)

    def ssh(self, command: Command, *, user: str = "root", timeout: float = 120) -> str:
        """stdout of `command` run as `user`, as stripped text; HostError if it fails."""
        return self.target(user).text(command, timeout=timeout)

    def overlays(self) -> List[Path]:
        """Per-test qcow2 overlays of the image's disks (kept across restarts)."""
        out = []
        for i, base in enumerate(self.image.disks):
            overlay = self.workdir / f"disk{i}.qcow2"
            if not overlay.exists():
                subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2"]
                    + [str(overlay)],
                    check=True,
                    capture_output=True,
                )
            out.append(overlay)
        return out

    def qemu_argv(self) -> List[str]:
        # restrict=on would also drop the router from QEMU's DHCP answer: no default route
        net = f"user,id=n0,restrict={'on' if self.restrict else 'off'}"
        net += f",hostfwd=tcp:{LOCALHOST}:{self.port}-{self.address}:22"
        for guest, host_port in self.guest_forwards:
            net += f",guestfwd=tcp:{guest}-tcp:{LOCALHOST}:{host_port}"
        argv = [
            "qemu-system-x86_64", *accel_args(), "-machine", "pc", "-m", str(self.memory),
            "-smp", "1", "-nodefaults", "-display", "none", "-monitor", "none",
            "-chardev", f"file,id=ser0,path={self.serial_log},append=on", "-serial", "chardev:ser0",
            "-netdev", net, "-device", f"virtio-net-pci,netdev=n0,mac={MAC},addr=0x3",
        ]  # fmt: skip
        disks = [(p, "qcow2") for p in self.overlays()] + [(p, "raw") for p in self.extra_disks]
        for i, (path, fmt) in enumerate(disks):
            serial = f"testhost-disk{i}" if i < len(self.image.disks) else f"testhost-extra{i}"
            argv += ["-drive", f"if=none,id=d{i},format={fmt},file={path}"]
            dev = f"virtio-blk-pci,drive=d{i},serial={serial},addr={4 + i:#x}"
            argv += ["-device", dev + (",bootindex=1" if i == 0 else "")]
        if self.image.variant.runtime_net:
            argv += ["-fw_cfg", f"name={FW_CFG_NET},string={RUNTIME_ADDRESS} {GATEWAY}"]
        return argv

    def start(self, timeout: float = 600) -> None:
        """Boot and wait until root's SSH login answers (strictly checked host key)."""
        for _attempt in range(3):  # a free port can be taken before QEMU binds it
            self.port = free_port()
            write_known_hosts(self.known_hosts, LOCALHOST, self.port, self.image.host_keys)
            start = time.monotonic()
            with open(self.workdir / "qemu.err", "ab") as err:
                seen = err.tell()
                self._proc = subprocess.Popen(
                    self.qemu_argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            if self.wait_for_ssh(timeout):
                self.boot_seconds = time.monotonic() - start
                return
            if b"host forwarding rule" not in (self.workdir / "qemu.err").read_bytes()[seen:]:
                break
        self.kill()
        raise HostError(f"the test host gave no SSH login:\n{self.describe()}")

    def wait_for_ssh(self, timeout: float) -> bool:
        """True once root's login answers (e.g. again after a guest reboot); False when QEMU
        exits or `timeout` seconds pass."""
        probe = self.target("root")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            with contextlib.suppress(subprocess.TimeoutExpired):
                if probe.run("true", timeout=30, check=False).returncode == 0:
                    return True
            time.sleep(2)
        return False

    @contextlib.contextmanager
    def running(self, timeout: float = 600) -> Iterator[HostVM]:
        """Started (SSH answers) inside the block; killed on the way out (its overlays are
        the test's own and never booted again: an orderly poweroff would only cost time)."""
        try:
            self.start(timeout=timeout)
            yield self
        finally:
            self.kill()

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def describe(self) -> str:
        """QEMU's stderr and the console tail, for failure messages."""
        err = (self.workdir / "qemu.err").read_text(errors="replace")[-1000:]
        log = self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""
        tail = "\n".join(log.replace("\r", "").splitlines()[-40:])
        return f"qemu stderr: {err}\nconsole tail:\n{tail}"
