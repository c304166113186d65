"""The only module that loads, unloads or executes a kexec kernel (kexec-tools through
nestos_installer.run) and reads /sys/kernel/kexec_*.

Never called against a fake root: callers pass the real "/" or get a UsageError.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

from nestos_installer import run as runner
from nestos_installer.errors import CommandFailed, NestosError, UsageError

REAL_ROOT = Path("/")


def _require_real(root: Path) -> None:
    if root.resolve() != REAL_ROOT:
        raise UsageError(f"--root {root} is for inspection only; not touching kexec")


def is_loaded(root: Path = REAL_ROOT) -> bool:
    try:
        return (root / "sys/kernel/kexec_loaded").read_text().strip() == "1"
    except OSError:
        return False


def load_argv(
    kernel: Union[str, Path], initrd: Union[str, Path], cmdline: str, *, file_load: bool
) -> List[str]:
    """kexec-tools command line: -s selects kexec_file_load (needed under lockdown), -c the
    legacy kexec_load syscall."""
    return [
        "kexec",
        "-l",
        "-s" if file_load else "-c",
        str(kernel),
        f"--initrd={initrd}",
        f"--command-line={cmdline}",
    ]


def load(
    kernel: Path, initrd: Path, cmdline: str, *, file_load: bool, root: Path = REAL_ROOT
) -> None:
    _require_real(root)
    runner.require_tool("kexec", "load the NestOS live kernel (install kexec-tools)")
    try:
        runner.run(load_argv(kernel, initrd, cmdline, file_load=file_load), timeout=600)
    except CommandFailed as e:
        raise load_failed(e) from e
    if not is_loaded(root):
        raise not_loaded()


def not_loaded() -> NestosError:
    """kexec -l said yes but the kernel does not say a kernel is loaded: never jump then."""
    return NestosError("kexec -l succeeded but /sys/kernel/kexec_loaded is not 1")


def load_failed(e: CommandFailed) -> NestosError:
    """The error for a failed `kexec -l`, with the likely reason when the kernel refused it."""
    hint = None
    if "Key was rejected" in e.stderr_tail or "Permission denied" in e.stderr_tail:
        hint = "the running kernel refused the load (Secure Boot / lockdown / IMA policy)"
    return NestosError("loading the live kernel with kexec", hint=hint)


def unload(root: Path = REAL_ROOT) -> bool:
    """Unload a staged kernel; returns whether one was loaded."""
    _require_real(root)
    if not is_loaded(root):
        return False  # nothing staged: never call kexec at all
    runner.require_tool("kexec", "unload the staged kernel")
    runner.run(["kexec", "-u"], timeout=60)
    if is_loaded(root):
        raise NestosError("kexec -u ran but a kernel is still loaded")
    return True


def execute(*, systemd: bool, root: Path = REAL_ROOT) -> None:
    """Jump: `systemctl kexec` (orderly shutdown, filesystems unmounted) when systemd is PID 1,
    else `kexec -e` (sync, then immediate jump)."""
    _require_real(root)
    if not is_loaded(root):
        raise NestosError("no kexec kernel is loaded")
    if systemd and runner.have_tool("systemctl"):
        runner.run(["systemctl", "kexec"], timeout=120)
    else:
        runner.run(["sync"], check=False, timeout=600)
        runner.run(["kexec", "-e"], timeout=120)
