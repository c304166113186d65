"""untrusted.py on real files and devices: caps, FIFOs that never hang, directories, and JSON/YAML
documents nested, truncated or malformed on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestos_installer import untrusted
from nestos_installer.errors import ConfigError, NestosError, StreamError, UsageError


def test_read_file_whole_and_capped(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 1000)
    assert untrusted.read_file(p, "thing", limit=1000) == b"x" * 1000
    with pytest.raises(ConfigError) as e:
        untrusted.read_file(p, "thing", limit=999)
    assert str(e.value) == f"reading thing {p}: larger than 999 bytes"


def test_devices_are_read_up_to_the_cap_only() -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match="reading Ignition config /dev/zero: larger than 1 MiB"):
        untrusted.read_file("/dev/zero", "Ignition config", limit=1 << 20)
    assert time.monotonic() - start < 5
    assert untrusted.read_file("/dev/null", "thing", limit=10) == b""
    with pytest.raises(NestosError, match="/dev/null: not a regular file"):
        untrusted.read_file("/dev/null", "image", limit=10, error=NestosError, regular_only=True)


def test_fifo_without_writer_reads_empty_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    assert untrusted.read_file(fifo, "thing", limit=10) == b""
    assert time.monotonic() - start < 5


def test_fifo_with_a_writer_is_read_like_process_substitution(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = "import sys; f = open(sys.argv[1], 'wb'); f.write(b'x' * 300000); f.close()"
    writer = subprocess.Popen([sys.executable, "-c", code, str(fifo)])
    try:
        deadline = time.monotonic() + 10  # the writer's open() blocks until we open
        data = b""
        while not data and time.monotonic() < deadline:
            data = untrusted.read_file(fifo, "thing", limit=1 << 20)
            time.sleep(0.05)
    finally:
        writer.wait(timeout=10)
    assert data == b"x" * 300000


def test_directories_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        untrusted.read_file(tmp_path, "config file", limit=10)
    assert str(e.value) == f"reading config file {tmp_path}: it is a directory"
    with pytest.raises(ConfigError) as e:
        untrusted.read_file(tmp_path / "nope", "config file", limit=10)
    assert str(e.value) == f"reading config file {tmp_path / 'nope'}"
    assert isinstance(e.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(
    "doc,why",
    [
        (b"[" * 100000, "nested more than 64 levels deep"),
        (b'{"a":' * 100000, "nested more than 64 levels deep"),
        (b"[" * 65 + b"]" * 65, "nested more than 64 levels deep"),
        (b"\xff{}", "not valid UTF-8 (byte 0)"),
        (b"1" * 5000, "not valid JSON (a number with too many digits)"),
        (b'{"a": ', "not valid JSON (line 1 column 7: Expecting value)"),
        (b" \n", "empty"),
    ],
)
def test_json_refusals(doc: bytes, why: str) -> None:
    with pytest.raises(StreamError) as e:
        untrusted.parse_json(doc, "stream x", error=StreamError)
    assert str(e.value) == f"stream x: {why}"


def test_json_within_bounds() -> None:
    assert untrusted.parse_json(b"[" * 64 + b"]" * 64, "x") is not None
    assert untrusted.parse_json(b'{"a": [1, {"b": "\\ud800"}]}', "x") == {"a": [1, {"b": "\ud800"}]}
    assert untrusted.depth({"a": [[], {"b": 1}]}) == 3 and untrusted.depth(5) == 0


@pytest.mark.parametrize(
    "doc,why",
    [
        ("a: " + "[" * 100000, "invalid YAML at line 1 column 68: nested more than 64 levels deep"),
        ("- " * 100000, "invalid YAML at line 1 column 129: nested more than 64 levels deep"),
        ("a: !!int 0x", "invalid YAML at line 1 column 4: cannot read !!int value '0x'"),
        ("a: !!timestamp 1", "invalid YAML at line 1 column 4: cannot read !!timestamp value '1'"),
        ("a: 2020-99-99", "invalid YAML at line 1 column 4: cannot read !!timestamp value"),
        ("a: [b", "invalid YAML at line 1 column 6: expected ',' or ']', but got '<stream end>'"),
        ("a: !!python/object:os.system x", "invalid YAML at line 1 column 4: could not determine"),
        ("? [a]\n: b", "invalid YAML at line 1 column 3: found unhashable key"),
    ],
)
def test_yaml_refusals_are_quick_and_positioned(doc: str, why: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        untrusted.parse_yaml(doc.encode(), "parsing config file c.yaml")
    assert str(e.value).startswith(f"parsing config file c.yaml: {why}")
    assert "invalid literal" not in str(e.value) and e.value.__cause__ is None
    assert time.monotonic() - start < 5  # PyYAML alone takes minutes on the first two


def test_yaml_within_bounds() -> None:
    nested = "[" * 63 + "]" * 63
    assert untrusted.parse_yaml(f"a: {nested}", "x") is not None
    assert untrusted.parse_yaml("a: &x [1]\nb: *x\n", "x") == {"a": [1], "b": [1]}


def test_require_utf8() -> None:
    assert untrusted.require_utf8("ttyS0,115200n8", "console") == "ttyS0,115200n8"
    bad = os.fsdecode(b"a\xff")
    with pytest.raises(UsageError) as e:
        untrusted.require_utf8(bad, "keyfile name")
    assert str(e.value) == "keyfile name is not valid UTF-8: 'a\\xff'"
    # a lone surrogate that is no surrogate escape (JSON's "\\ud800"): the same one line
    with pytest.raises(UsageError) as e:
        untrusted.require_utf8("a\ud800b", "hostname")
    assert str(e.value) == "hostname is not valid UTF-8: 'a\\ud800b'"


def test_size_text() -> None:
    assert [untrusted.size_text(n) for n in (64 << 20, 64 << 10, 1000)] == [
        "64 MiB",
        "64 KiB",
        "1000 bytes",
    ]
