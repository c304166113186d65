"""How an error reaches the user: the one renderer both command-line tools use.

`Error: what failed`, a `Caused by:` list from the exception's cause chain, and a `hint:` line,
in the user's terms (no `[Errno N]`, no Python type names for errors we know). stdlib + errors
only: the x2nestos zipapp bundles it.
"""

from __future__ import annotations

import os
import traceback
from typing import List, Optional, TextIO

from nestos_installer.errors import NestosError

# An exception we did not expect is a bug: say so on one line, never a traceback (unless
# --debug), and exit with EX_SOFTWARE so that scripts can tell it from a refusal.
EXIT_INTERNAL = 70
MAX_CAUSES = 20


def describe(err: BaseException) -> str:
    """One exception as a phrase: OSErrors as `strerror: filename`, ours as their message."""
    if isinstance(err, NestosError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        names = [n for n in (err.filename, err.filename2) if n is not None]
        where = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
        return f"{err.strerror}: {where}" if where else err.strerror
    text = str(err)
    return text or type(err).__name__


def is_expected(err: BaseException) -> bool:
    """Errors that are the user's or the world's doing, not ours."""
    return isinstance(err, (NestosError, OSError))


def format_error(err: BaseException) -> List[str]:
    """`Error: msg`, then a `Caused by:` list from the __cause__ chain, then `hint:`."""
    if is_expected(err):
        lines = [f"Error: {describe(err)}"]
    else:
        lines = [f"Error: internal error ({type(err).__name__}: {describe(err)})"]
    causes: List[str] = []
    seen = {id(err)}
    cur: Optional[BaseException] = err.__cause__
    while cur is not None and id(cur) not in seen and len(causes) < MAX_CAUSES:
        seen.add(id(cur))
        causes.append(describe(cur))
        cur = cur.__cause__
    if causes:
        lines += ["", "Caused by:"]
        lines += [f"    {i}: {c}" if len(causes) > 1 else f"    {c}" for i, c in enumerate(causes)]
    hint = getattr(err, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    elif not is_expected(err):
        lines.append("hint: this is a bug; rerun with --debug for the traceback and report it")
    return lines


def exit_code(err: BaseException) -> int:
    if isinstance(err, NestosError):
        return err.exit_code
    return 1 if isinstance(err, OSError) else EXIT_INTERNAL


def report(err: BaseException, stream: TextIO, *, debug: bool = False) -> int:
    """Print the error (and, with debug, its traceback) to `stream`; return the exit code."""
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=stream)
    # lone surrogates (non-UTF-8 names) must not turn the report itself into a traceback
    text = "\n".join(format_error(err)) + "\n"
    stream.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    stream.flush()
    return exit_code(err)
