"""QEMU boot harness: boot a disk, an ISO or a kernel headless and read the serial console.

TCG by default (this machine's /dev/kvm is PVM and cannot run stock guests); NESTOS_QEMU_ACCEL=kvm
opts in to KVM. The guest prints its findings between the demo markers; parse_markers() reads them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

BEGIN = "=====NESTOS-DEMO-BEGIN====="
END = "=====NESTOS-DEMO-END====="
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
KINDS = ("disk", "cdrom", "kernel")


class BootError(Exception):
    """QEMU could not be started, or the guest did not print a complete marker block."""


@dataclass(frozen=True)
class Disk:
    """An extra virtio disk; snapshot=True keeps the file unmodified."""

    path: Path
    snapshot: bool = False
    fmt: str = "raw"


@dataclass(frozen=True)
class SshForward:
    """Host 127.0.0.1:`port` -> the guest's sshd (at `guest_addr`; empty: QEMU's DHCP address)."""

    port: int
    guest_addr: str = ""


@dataclass(frozen=True)
class BootResult:
    """Outcome of one boot: the whole serial log, the marker block, QEMU's status, wall time."""

    serial_text: str
    markers: str
    rc: int
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and END in self.serial_text

    def fields(self) -> Dict[str, str]:
        return parse_markers(self.serial_text)

    def describe(self) -> str:
        """A short failure description with the tail of the console, for assertion messages."""
        tail = "\n".join(self.serial_text.splitlines()[-40:])
        return f"rc={self.rc} timed_out={self.timed_out} after {self.seconds:.1f}s\n{tail}"


def marker_block(text: str) -> str:
    """The text strictly between the BEGIN and END markers ('' if BEGIN is missing)."""
    text = text.replace("\r", "")
    start = text.find(BEGIN)
    if start < 0:
        return ""
    start += len(BEGIN)
    end = text.find(END, start)
    return text[start : end if end >= 0 else len(text)].strip("\n")


_BLOCKS = {"CONFIG-IGN-BEGIN": ("CONFIG-IGN-END", "config_ign")}
_NET_FILE = re.compile(r"^NETWORK-FILE-BEGIN (\S+)$")


def parse_markers(text: str) -> Dict[str, str]:
    """Turn the marker block into a dict.

    `KEY: value` lines become key `key` lower-cased with '-' as '_' (CMDLINE -> `cmdline`,
    FIRSTBOOT -> `firstboot`, GRUB-CONSOLE -> `grub_console`, ...). The Ignition config between
    CONFIG-IGN-BEGIN/END becomes `config_ign`; a network keyfile printed by the live guest
    becomes `network_file:<name>`. File contents come without their final newline. Absent keys
    are simply missing.
    """
    out: Dict[str, str] = {}
    lines = marker_block(text).split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _NET_FILE.match(line)
        if line in _BLOCKS or m:
            end, key = _BLOCKS[line] if line in _BLOCKS else ("NETWORK-FILE-END", "")
            if m:
                key = f"network_file:{m.group(1)}"
            body: List[str] = []
            i += 1
            while i < len(lines) and lines[i] != end:
                body.append(lines[i])
                i += 1
            # the guest ends the file's last line itself, so its final newline is not part of it
            out[key] = "\n".join(body)
        elif ": " in line or line.endswith(":"):
            k, _, v = line.partition(":")
            # "CONFIG-IGN: absent" leaves `config_ign` missing rather than saying "absent"
            if re.fullmatch(r"[A-Z0-9-]+", k) and k != "CONFIG-IGN":
                out[k.lower().replace("-", "_")] = v.strip()
        i += 1
    return out


def accel_args() -> List[str]:
    if os.environ.get("NESTOS_QEMU_ACCEL") == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,tb-size=256", "-cpu", "max"]


def _drive(
    path: Path, *, snapshot: bool, fmt: str = "raw", cdrom: bool = False, n: int
) -> List[str]:
    opts = f"if=none,id=d{n},format={fmt},file={path}"
    if cdrom:
        return ["-drive", opts + ",media=cdrom,readonly=on", "-device", f"ide-cd,drive=d{n}"]
    if snapshot:
        opts += ",snapshot=on"
    return ["-drive", opts, "-device", f"virtio-blk-pci,drive=d{n}"]


def _join_initrds(parts: Sequence[Path], dest: Path) -> Path:
    """One initrd file from several, each padded to 4 bytes, as PXE loaders pass them."""
    if len(parts) == 1:
        return Path(parts[0])
    with open(dest, "wb") as out:
        for p in parts:
            data = Path(p).read_bytes()
            out.write(data + b"\0" * (-len(data) % 4))
    return dest


def qemu_argv(
    media: Optional[Path],
    *,
    firmware: str,
    kind: str,
    serial_log: Path,
    vars_file: Path,
    kernel: Optional[Path] = None,
    initrd: Optional[Sequence[Path]] = None,
    append: Optional[str] = None,
    extra_disks: Sequence[Union[Path, Disk]] = (),
    memory: int = 512,
    snapshot: bool = True,
    net_forward_port: Optional[int] = None,
    extra_args: Sequence[str] = (),
    ssh: Optional[SshForward] = None,
) -> List[str]:
    """The full qemu-system-x86_64 command line for one boot."""
    if firmware not in FIRMWARES or kind not in KINDS:
        raise ValueError(f"firmware must be one of {FIRMWARES}, kind one of {KINDS}")
    argv = [
        "qemu-system-x86_64",
        *accel_args(),
        "-m",
        str(memory),
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial_log}",
    ]
    argv += _firmware_args(firmware, vars_file)
    if kind == "kernel":
        argv += _kernel_args(kernel, initrd, append, vars_file.parent / "initrd.img")
    n = 0
    if media is not None:
        argv += _drive(media, snapshot=snapshot, cdrom=kind == "cdrom", n=n)
        argv[-1] += ",bootindex=1"
        n += 1
    for d in extra_disks:
        disk = d if isinstance(d, Disk) else Disk(Path(d))
        argv += _drive(disk.path, snapshot=disk.snapshot, fmt=disk.fmt, n=n)
        n += 1
    return argv + net_args(net_forward_port, ssh) + list(extra_args)


def _firmware_args(firmware: str, vars_file: Path) -> List[str]:
    if firmware != "uefi":
        return ["-machine", "pc"]
    shutil.copyfile(OVMF_VARS, vars_file)
    return [
        "-machine",
        "q35",
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={vars_file}",
    ]


def _kernel_args(
    kernel: Optional[Path], initrd: Optional[Sequence[Path]], append: Optional[str], joined: Path
) -> List[str]:
    """-kernel/-initrd/-append of a direct kernel boot (several initrds joined into `joined`)."""
    if kernel is None:
        raise ValueError("kind='kernel' needs kernel=")
    argv = ["-kernel", str(kernel)]
    if initrd:
        argv += ["-initrd", str(_join_initrds(initrd, joined))]
    if append is not None:
        argv += ["-append", append]
    return argv


def net_args(http_port: Optional[int], ssh: Optional[SshForward]) -> List[str]:
    """One user-mode NIC (restrict=on: the guest reaches nothing it was not given).

    `http_port`: the guest reaches 127.0.0.1:PORT on the host as http://10.0.2.100/.
    `ssh`: 127.0.0.1:ssh.port on the host reaches the guest's port 22.
    """
    if http_port is None and ssh is None:
        return []
    opts = "user,id=n0,restrict=on"
    if http_port is not None:
        opts += f",guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:{http_port}"
    if ssh is not None:
        opts += f",hostfwd=tcp:127.0.0.1:{ssh.port}-{ssh.guest_addr}:22"
    return ["-netdev", opts, "-device", "virtio-net-pci,netdev=n0"]


def boot(
    media: Optional[Path] = None,
    *,
    firmware: str = "bios",
    kind: str = "disk",
    kernel: Optional[Path] = None,
    initrd: Optional[Sequence[Path]] = None,
    append: Optional[str] = None,
    extra_disks: Sequence[Union[Path, Disk]] = (),
    timeout: float = 180,
    extra_args: Sequence[str] = (),
    memory: int = 512,
    snapshot: bool = True,
    net_forward_port: Optional[int] = None,
    serial_log: Optional[Path] = None,
) -> BootResult:
    """Boot once and wait for the guest to power off (or for `timeout` seconds).

    kind: "disk" (media on virtio-blk), "cdrom" (media on ide-cd), "kernel" (-kernel/-initrd/
    -append; media, if given, is attached as a disk). `snapshot` protects the media file.
    QEMU is always killed before returning. The serial log is kept only if `serial_log` is given.
    """
    if shutil.which("qemu-system-x86_64") is None:
        raise BootError("qemu-system-x86_64 not found (apt: qemu-system-x86)")
    with tempfile.TemporaryDirectory(prefix="nestos-qemu-") as tmp:
        log = serial_log if serial_log is not None else Path(tmp) / "serial.log"
        log.write_bytes(b"")
        argv = qemu_argv(
            media,
            firmware=firmware,
            kind=kind,
            serial_log=log,
            vars_file=Path(tmp) / "vars.fd",
            kernel=kernel,
            initrd=initrd,
            append=append,
            extra_disks=extra_disks,
            memory=memory,
            snapshot=snapshot,
            net_forward_port=net_forward_port,
            extra_args=extra_args,
        )
        start = time.monotonic()
        rc, err, timed_out = _run_to_exit(argv, timeout)
        seconds = time.monotonic() - start
        text = log.read_bytes().decode(errors="replace").replace("\r", "")
        if rc not in (0, None) and not timed_out and BEGIN not in text:
            raise BootError(f"qemu exited with {rc}: {err.decode(errors='replace')}")
        return BootResult(text, marker_block(text), rc or 0, seconds, timed_out)


def _run_to_exit(argv: Sequence[str], timeout: float) -> Tuple[Optional[int], bytes, bool]:
    """Run QEMU until it exits or `timeout`: (status, stderr, timed out); never left running."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _, err = _kill(proc)
    finally:
        if proc.poll() is None:
            _kill(proc)
    return proc.returncode, err, timed_out


def _kill(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, err = proc.communicate()
    return out or b"", err or b""
