"""Kernel-argument string editing (delete, append, replace) shared by BLS and ISO karg code.

Pure string logic, imports only `errors` and `untrusted`; semantics follow coreos-installer
(spec §4.10).
"""

from __future__ import annotations

import re
from typing import Iterable, Tuple

from nestos_installer.errors import UsageError
from nestos_installer.untrusted import require_utf8

_REPLACE_RE = re.compile(r"^([^=]+)=([^=]+)=([^=]+)$")


def check_arg(arg: str, what: str = "kernel argument") -> str:
    """`arg` as given, if it can go into a kernel command line: UTF-8, no control characters
    (a newline would end a BLS `options` line or a GRUB `linux` line)."""
    require_utf8(arg, what)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg):
        raise UsageError(f"{what} {arg!r} contains a control character")
    return arg


def parse_replace(spec: str) -> Tuple[str, str, str]:
    """Split `KEY=OLD=NEW`, or raise UsageError with the upstream wording."""
    m = _REPLACE_RE.match(spec)
    if m is None:
        raise UsageError("Wrong input, format should be: KEY=OLD=NEW")
    return m.group(1), m.group(2), m.group(3)


def edit_kargs(
    current: str,
    append: Iterable[str] = (),
    delete: Iterable[str] = (),
    replace: Iterable[str] = (),
) -> str:
    """Apply deletes, then appends, then `KEY=OLD=NEW` replaces, whatever the CLI order."""
    append, delete = [check_arg(a) for a in append], [check_arg(a) for a in delete]
    parsed = [parse_replace(check_arg(r)) for r in replace]
    s = f" {current} "
    for arg in delete:
        s = s.replace(f" {arg.strip()} ", " ")
    for arg in append:
        s += f"{arg.strip()} "
    for key, old, new in parsed:
        s = s.replace(f" {key}={old} ", f" {key}={new} ")
    return s.strip()
