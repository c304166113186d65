"""Progress reporting for byte streams: tqdm bar, journald-friendly lines, or JSON lines.

Library code writes only to the stream it is given (stderr by default); imports no project
modules. `update()` is called once per chunk and must stay cheap.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from types import TracebackType
from typing import Any, Dict, Optional, TextIO, Type

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int) -> str:
    """`512 B`, `1.2 MiB`: binary units with one decimal, like coreos-installer."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


class ProgressMode(enum.Enum):
    AUTO = "auto"
    BAR = "bar"
    PLAIN = "plain"
    JSON = "json"
    NONE = "none"

    def resolve(self, stream: TextIO) -> ProgressMode:
        """AUTO becomes BAR on a terminal and PLAIN elsewhere (journald, pipes, files)."""
        if self is not ProgressMode.AUTO:
            return self
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return ProgressMode.BAR if tty else ProgressMode.PLAIN


class Progress:
    """Counts bytes of one phase (`Read <phase> ...`) and reports them in the chosen mode."""

    def __init__(
        self,
        phase: str,
        total: Optional[int],
        mode: ProgressMode = ProgressMode.AUTO,
        stream: TextIO = sys.stderr,
        interval: float = 5.0,
    ) -> None:
        self.phase = phase
        self.total = total if total is not None and total >= 0 else None
        self.mode = mode.resolve(stream)
        self.stream = stream
        self.interval = interval
        self.done = 0
        self.closed = False
        self._start = time.monotonic()
        self._next = self._start + interval
        self._bar: Any = None
        if self.mode is ProgressMode.BAR:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=f"Read {phase}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=stream,
                leave=True,
                dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode is not ProgressMode.NONE:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.interval
                self._emit(now, final=False)

    def on_chunk(self, data: bytes) -> None:
        """A TeeReader sink: `TeeReader(src, [progress.on_chunk])`."""
        self.update(len(data))

    def close(self, *, failed: bool = False) -> None:
        """Report the final count once (a bar is left on screen)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode is not ProgressMode.NONE:
            self._emit(time.monotonic(), final=True, failed=failed)

    def line(self) -> str:
        """The PLAIN text: `Read <phase> 1.2 MiB/10.0 MiB (12%)`."""
        if self.total is None:
            return f"Read {self.phase} {format_bytes(self.done)}"
        pct = 100 if self.total == 0 else min(self.done * 100 // self.total, 100)
        return f"Read {self.phase} {format_bytes(self.done)}/{format_bytes(self.total)} ({pct}%)"

    def _emit(self, now: float, *, final: bool, failed: bool = False) -> None:
        if self.mode is ProgressMode.JSON:
            elapsed = now - self._start
            record: Dict[str, Any] = {
                "phase": self.phase,
                "bytes": self.done,
                "total": self.total,
                "rate": round(self.done / elapsed, 1) if elapsed > 0 else 0.0,
            }
            if final:
                record["done"] = True
                if failed:
                    record["failed"] = True
            text = json.dumps(record)
        else:
            text = self.line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close(failed=exc_type is not None)
