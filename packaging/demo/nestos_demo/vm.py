"""A guest left running in the background, to be reached over SSH: QEMU in its own session with
the guest's port 22 forwarded to a free 127.0.0.1 port, the serial console in a file, its CPU
time for boot measurements; always killed when the `running()` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from nestos_demo.qemu import BootError, Disk, SshForward, qemu_argv
from nestos_demo.ssh import free_port

BIND_FAILED = "Could not set up host forwarding rule"


@dataclass
class Vm:
    """One running QEMU: `ssh_port` on 127.0.0.1 reaches the guest's sshd."""

    proc: subprocess.Popen[bytes]
    serial_log: Path
    stderr_log: Path
    ssh_port: int
    started: float

    def alive(self) -> bool:
        return self.proc.poll() is None

    def serial(self) -> str:
        """The serial console so far (carriage returns dropped)."""
        return self.serial_log.read_bytes().decode(errors="replace").replace("\r", "")

    def qemu_errors(self) -> str:
        return self.stderr_log.read_text(errors="replace")

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def cpu_seconds(self) -> float:
        """User + system CPU time QEMU used so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the guest to power off or reboot (-no-reboot); False on timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _start(argv: Sequence[str], serial_log: Path, stderr_log: Path, port: int) -> Vm:
    serial_log.write_bytes(b"")
    with open(stderr_log, "wb") as err:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    return Vm(proc, serial_log, stderr_log, port, time.monotonic())


@contextlib.contextmanager
def running(
    media: Path,
    *,
    firmware: str = "uefi",
    kind: str = "disk",
    ssh_guest_addr: str = "",
    memory: int = 1024,
    snapshot: bool = False,
    extra_disks: Sequence[Union[Path, Disk]] = (),
    serial_log: Optional[Path] = None,
    extra_args: Sequence[str] = (),
    kernel: Optional[Path] = None,
    initrd: Optional[Sequence[Path]] = None,
    append: Optional[str] = None,
) -> Iterator[Vm]:
    """Start the guest (writes go to `media` unless `snapshot`); kill it when the block ends.

    kind: as qemu.boot ("kernel": -kernel/-initrd/-append, `media` is the first disk). A port
    taken between choosing and binding it is retried with another one.
    """
    if shutil.which("qemu-system-x86_64") is None:
        raise BootError("qemu-system-x86_64 not found (apt: qemu-system-x86)")
    with tempfile.TemporaryDirectory(prefix="nestos-vm-") as tmp:
        log = serial_log if serial_log is not None else Path(tmp) / "serial.log"
        vm: Optional[Vm] = None
        try:
            for _ in range(3):
                port = free_port()
                fwd = SshForward(port, ssh_guest_addr)
                argv = qemu_argv(
                    media, firmware=firmware, kind=kind, serial_log=log, memory=memory, ssh=fwd,
                    vars_file=Path(tmp) / "vars.fd", snapshot=snapshot, extra_disks=extra_disks,
                    extra_args=extra_args, kernel=kernel, initrd=initrd, append=append,
                )  # fmt: skip
                vm = _start(argv, log, Path(tmp) / "qemu.err", port)
                time.sleep(1)
                if vm.alive() or BIND_FAILED not in vm.qemu_errors():
                    break
            assert vm is not None
            yield vm
        finally:
            if vm is not None:
                vm.stop()
