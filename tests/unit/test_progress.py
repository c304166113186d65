"""Progress output formats: PLAIN lines (coreos-installer style), JSON lines, tqdm bar, none."""

from __future__ import annotations

import io
import json
import re
import time

import pytest

from nestos_installer.pipeline.progress import Progress, ProgressMode, format_bytes
from nestos_installer.pipeline.readers import BytesReader, TeeReader, copy_stream


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.0 KiB"
    assert format_bytes(1258291) == "1.2 MiB"
    assert format_bytes(10 << 20) == "10.0 MiB"
    assert format_bytes(3 << 30) == "3.0 GiB"
    assert format_bytes(5 << 50) == "5.0 PiB"


def test_auto_mode_follows_the_stream() -> None:
    assert ProgressMode.AUTO.resolve(io.StringIO()) is ProgressMode.PLAIN
    assert ProgressMode.AUTO.resolve(Tty()) is ProgressMode.BAR
    assert ProgressMode.JSON.resolve(Tty()) is ProgressMode.JSON
    assert ProgressMode("plain") is ProgressMode.PLAIN


def test_plain_lines_with_total() -> None:
    out = io.StringIO()
    with Progress("disk", 10 << 20, ProgressMode.PLAIN, out, interval=0.0) as p:
        p.update(1258291)
        p.update((10 << 20) - 1258291)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Read disk 1.2 MiB/10.0 MiB (11%)"
    assert lines[1] == "Read disk 10.0 MiB/10.0 MiB (100%)"
    assert lines[-1] == "Read disk 10.0 MiB/10.0 MiB (100%)"  # the closing line
    assert len(lines) == 3


def test_plain_without_total() -> None:
    out = io.StringIO()
    with Progress("image", None, ProgressMode.PLAIN, out, interval=0.0) as p:
        p.update(2048)
    assert out.getvalue().splitlines() == ["Read image 2.0 KiB", "Read image 2.0 KiB"]


def test_plain_is_rate_limited() -> None:
    out = io.StringIO()
    p = Progress("disk", 1000, ProgressMode.PLAIN, out, interval=3600.0)
    for _ in range(1000):
        p.update(1)
    assert out.getvalue() == ""  # nothing before the interval elapsed
    p.close()
    p.close()  # idempotent
    assert out.getvalue() == "Read disk 1000 B/1000 B (100%)\n"


def test_json_lines_and_final_record() -> None:
    out = io.StringIO()
    with Progress("disk", 4096, ProgressMode.JSON, out, interval=0.001) as p:
        p.update(1024)
        time.sleep(0.01)
        p.update(3072)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) >= 2
    for r in records:
        assert set(r) >= {"phase", "bytes", "total", "rate"}
        assert r["phase"] == "disk" and r["total"] == 4096
        assert isinstance(r["rate"], float) and r["rate"] >= 0
    assert records[-1]["done"] is True and records[-1]["bytes"] == 4096
    assert "done" not in records[0]
    assert "failed" not in records[-1]


def test_json_marks_failure() -> None:
    out = io.StringIO()
    with pytest.raises(KeyError):
        with Progress("disk", None, ProgressMode.JSON, out, interval=60) as p:
            p.update(5)
            raise KeyError("boom")
    record = json.loads(out.getvalue())
    assert record == {**record, "bytes": 5, "total": None, "done": True, "failed": True}


def test_none_mode_is_silent() -> None:
    out = io.StringIO()
    with Progress("disk", 10, ProgressMode.NONE, out, interval=0.0) as p:
        p.update(10)
    assert out.getvalue() == ""


def test_bar_mode_uses_binary_units() -> None:
    out = Tty()
    with Progress("disk", 8 << 20, ProgressMode.AUTO, out) as p:
        for _ in range(8):
            p.update(1 << 20)
    text = out.getvalue()
    assert "Read disk" in text
    assert re.search(r"8\.00M(i)?B?/8\.00M", text), text


def test_as_tee_sink() -> None:
    out = io.StringIO()
    data = b"x" * 100_000
    with Progress("disk", len(data), ProgressMode.PLAIN, out, interval=3600) as p:
        copy_stream(TeeReader(BytesReader(data, chunk=7000), [p.on_chunk]), lambda b: None)
        assert p.done == len(data)
    assert out.getvalue() == "Read disk 97.7 KiB/97.7 KiB (100%)\n"
