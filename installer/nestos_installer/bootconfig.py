"""Boot configuration on a mounted `boot` filesystem: the BLS entry's options line, platform
ID, consoles (kernel args + the GRUB CONSOLE-SETTINGS block) and first-boot args.

Works on a directory (a Path), so it is tested on temporary trees; imports `kargs`, `errors`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from nestos_installer.errors import ConfigError, TargetError, UsageError
from nestos_installer.kargs import edit_kargs

_SERIAL_RE = re.compile(r"^(ttyS|ttyAMA)(\d+)(,(\d+)([noe]([5-8])?)?)?$")
_GRAPHICAL = ("tty0", "hvc0", "ttysclp0")
_PARITY = {"n": "no", "o": "odd", "e": "even"}


@dataclass(frozen=True)
class Console:
    """A console spec (`ttyS0,115200n8`, `tty0`) in canonical form."""

    prefix: str
    port: int
    speed: Optional[int] = None
    parity: str = "n"
    bits: int = 8

    @classmethod
    def parse(cls, spec: str) -> Console:
        for bad in ("console=", "/dev/"):
            if spec.startswith(bad):
                raise UsageError(f'console spec should not start with "{bad}": {spec}')
        if spec in _GRAPHICAL:
            m = re.match(r"^([a-z]+)(\d+)$", spec)
            assert m
            return cls(m.group(1), int(m.group(2)))
        m = _SERIAL_RE.match(spec)
        if not m:
            raise UsageError(
                f"invalid or unsupported console argument: {spec!r}",
                hint="e.g. --console ttyS0,115200n8 or --console tty0",
            )
        return cls(
            m.group(1),
            int(m.group(2)),
            int(m.group(4) or 9600),
            (m.group(5) or "n")[0],
            int(m.group(6) or 8),
        )

    @property
    def serial(self) -> bool:
        return self.speed is not None

    def __str__(self) -> str:
        if not self.serial:
            return f"{self.prefix}{self.port}"
        return f"{self.prefix}{self.port},{self.speed}{self.parity}{self.bits}"

    def karg(self) -> str:
        return f"console={self}"

    def grub_command(self) -> Optional[str]:
        if not self.serial:
            return None
        return (
            f"serial --unit={self.port} --speed={self.speed} --word={self.bits} "
            f"--parity={_PARITY[self.parity]}"
        )


def console_settings(consoles: Sequence[Console]) -> Tuple[List[str], List[str]]:
    """(kernel args, GRUB commands) for a list of consoles."""
    kargs = [c.karg() for c in consoles]
    cmds = [c for c in (x.grub_command() for x in consoles) if c]
    terminals = sorted({"serial" if c.serial else "console" for c in consoles})
    if terminals:
        cmds += [f"terminal_input {' '.join(terminals)}", f"terminal_output {' '.join(terminals)}"]
    return kargs, cmds


# ---------------------------------------------------------------- BLS entry


def bls_entry(boot: Path) -> Path:
    """The default BLS entry: the last `loader/entries/*.conf` by file name."""
    entries = sorted((boot / "loader" / "entries").glob("*.conf"))
    if not entries:
        raise TargetError(f"Found no BLS entries in {boot / 'loader' / 'entries'}")
    return entries[-1]


def read_options(entry: Path) -> str:
    lines = [ln for ln in entry.read_text().splitlines() if ln.startswith("options ")]
    if not lines:
        raise TargetError(f"Couldn't locate 'options' line in {entry.name}")
    if len(lines) > 1:
        raise TargetError(f"Multiple 'options' lines found in {entry.name}")
    return lines[0][len("options ") :].strip()


def write_options(entry: Path, options: str) -> None:
    out = []
    for ln in entry.read_text().splitlines():
        out.append(f"options {options}" if ln.startswith("options ") else ln.rstrip())
    entry.write_text("".join(f"{ln}\n" for ln in out))


def load_platforms(boot: Path) -> Dict[str, Dict[str, List[str]]]:
    path = boot / "nestos" / "platforms.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"parsing {path}") from e
    return {
        k: {
            "grub_commands": list(v.get("grub_commands", [])),
            "kernel_arguments": list(v.get("kernel_arguments", [])),
        }
        for k, v in data.items()
        if isinstance(v, dict)
    }


def replace_grub_console(grub_cfg: Path, commands: Sequence[str]) -> None:
    text = grub_cfg.read_text()
    start, end = "\n# CONSOLE-SETTINGS-START\n", "# CONSOLE-SETTINGS-END"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise TargetError("missing substitution marker in grub.cfg")
    body = "".join(f"{c}\n" for c in commands)
    grub_cfg.write_text(text[: i + len(start)] + body + text[j:])


@dataclass(frozen=True)
class BootEdits:
    platform: Optional[str] = None
    consoles: Tuple[Console, ...] = ()
    append: Tuple[str, ...] = ()
    delete: Tuple[str, ...] = ()
    firstboot_args: Optional[str] = None

    def __bool__(self) -> bool:
        return bool(
            self.platform or self.consoles or self.append or self.delete or self.firstboot_args
        )


def apply(boot: Path, edits: BootEdits, say: Callable[[str], None]) -> None:
    """Apply platform, console, karg and first-boot edits to a mounted boot filesystem."""
    entry = bls_entry(boot)
    options = read_options(entry)
    new = options
    platforms = load_platforms(boot) if (edits.platform or edits.consoles) else {}
    metal = platforms.get("metal", {"grub_commands": [], "kernel_arguments": []})
    if edits.platform and edits.platform != "metal":
        say(f"Setting platform to {edits.platform}")
        replaced = new.replace(
            "ignition.platform.id=metal", f"ignition.platform.id={edits.platform}"
        )
        if replaced == new:
            raise TargetError("couldn't locate platform ID")
        new = replaced
    if edits.consoles or (edits.platform and edits.platform != "metal"):
        if edits.consoles:
            kargs, cmds = console_settings(edits.consoles)
        else:
            p = platforms.get(edits.platform or "", {})
            kargs, cmds = p.get("kernel_arguments", []), p.get("grub_commands", [])
        new = edit_kargs(new, append=kargs, delete=metal["kernel_arguments"])
        if list(cmds) != list(metal["grub_commands"]):
            grub = boot / "grub2" / "console.cfg"
            replace_grub_console(grub if grub.exists() else boot / "grub2" / "grub.cfg", cmds)
    if edits.append or edits.delete:
        say("Modifying kernel arguments")
        new = edit_kargs(new, append=edits.append, delete=edits.delete)
    if new != options:
        write_options(entry, new)
    if edits.firstboot_args:
        say("Writing first-boot kernel arguments")
        fb = boot / "ignition.firstboot"
        if not fb.exists():
            raise TargetError("ignition.firstboot is missing on the boot partition")
        if '"' in edits.firstboot_args:
            raise UsageError("first-boot arguments may not contain '\"'")
        with fb.open("a") as f:
            f.write(f'set ignition_network_kcmdline="{edits.firstboot_args}"\n')
