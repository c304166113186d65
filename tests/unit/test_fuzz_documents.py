"""Property tests for the documents we take from users and servers: stream metadata JSON, installer
config YAML and Ignition configs. Arbitrary, mutated and deeply nested inputs give a clean result
or one of our typed errors, never another exception, within the per-example deadline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Tuple

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from helpers.fuzz import FUZZ, edits, mutate
from helpers.tools import package_dir
from nestos_installer import config, ignition, untrusted
from nestos_installer.errors import NestosError
from nestos_installer.live.customize import read_ignition
from nestos_stream import Stream, StreamError

EXAMPLE_STREAM = (package_dir("nestos_stream") / "examples" / "2403-LTS.json").read_bytes()
EXAMPLE_CONFIG = (
    b"dest-device: /dev/vda\nstream: 2403-LTS\nconsole: [ttyS0,115200n8]\n"
    b"append-karg: [nosmt]\ncopy-network: true\nfetch-retries: 3\nsave-partindex: ['5-']\n"
)
EXAMPLE_IGNITION = b'{"ignition": {"version": "3.4.0"}, "storage": {"files": []}}'
DEEP = [b"[" * 100000, b'{"a":' * 50000, b"[" * 65 + b"]" * 65]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["ttyS0,115200n8", "bogus", "0x", "5-", "-", "infinite", "\ud800"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _paths(doc: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Every place in a JSON document where a value can be swapped."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _swap(doc: Any, path: Tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


STREAM_DOC = json.loads(EXAMPLE_STREAM)
STREAM_PATHS = _paths(STREAM_DOC)


def stream_ok(data: bytes) -> None:
    try:
        stream = Stream.from_json(data, "http://h/s.json")
    except StreamError as e:
        assert "\n" not in str(e) and "Traceback" not in str(e)
        return
    for arch, platform, fmt in stream.rows():  # a parsed stream answers selections in kind
        try:
            stream.select(arch, platform, fmt)
        except StreamError:
            pass


@FUZZ
@given(st.binary(max_size=2048))
@example(DEEP[0])
@example(DEEP[1])
@example(b'{"stream": ' + b"1" * 5000 + b"}")
@example(b"\xff\xfe{}")
def test_stream_arbitrary_bytes(data: bytes) -> None:
    stream_ok(data)


@FUZZ
@given(edits(len(EXAMPLE_STREAM)))
def test_stream_mutated_bytes(changes: List[Tuple[int, int]]) -> None:
    stream_ok(mutate(EXAMPLE_STREAM, changes))


@FUZZ
@given(st.sampled_from(STREAM_PATHS), json_values)
@example(("architectures",), {"\n": None})  # a key with a line break: still one line
@example(("architectures",), {"\ud800": None})  # a lone surrogate from a JSON escape
def test_stream_wrong_shapes(path: Tuple[Any, ...], value: Any) -> None:
    stream_ok(json.dumps(_swap(STREAM_DOC, path, value)).encode())


def config_ok(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    try:
        values = config.parse_file(p)
    except NestosError as e:
        assert "Traceback" not in str(e)
        return
    assert set(values) <= set(config.ALL_KEYS)
    for key, value in values.items():  # what passed is typed as the schema says
        want = list if key in config.LIST_KEYS else bool if key in config.FLAG_KEYS else str
        assert isinstance(value, want), (key, value)
    config.to_yaml(values)


@FUZZ
@given(st.binary(max_size=1024))
@example(b"a: " + b"[" * 100000)
@example(b"- " * 30000)
@example(b"a: !!int 0x\n")
@example(b"a: !!timestamp 1\n")
@example(b"? [a]\n: b\n")
@example(b"dest-device: &a [x]\nconsole: *a\n")
def test_config_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    config_ok(tmp_path, data)


@FUZZ
@given(edits(len(EXAMPLE_CONFIG)))
def test_config_mutated_bytes(tmp_path: Path, changes: List[Tuple[int, int]]) -> None:
    config_ok(tmp_path, mutate(EXAMPLE_CONFIG, changes))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*config.ALL_KEYS, "secure-ipl", "bogus"]) | st.text(max_size=5),
        json_values,
        max_size=6,
    )
)
def test_config_wrong_types(tmp_path: Path, doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=False)
    except yaml.YAMLError:  # a lone surrogate cannot be written as YAML
        return
    config_ok(tmp_path, text.encode())


def ignition_ok(tmp_path: Path, data: bytes) -> None:
    try:
        ignition.validate(data, "c.ign")
    except NestosError:
        pass
    p = tmp_path / "c.ign"
    p.write_bytes(data)
    try:
        raw, obj = read_ignition(str(p))
    except NestosError:
        return
    assert raw == data and isinstance(obj, dict)
    assert untrusted.depth(obj) <= untrusted.MAX_DEPTH


@FUZZ
@given(st.binary(max_size=1024))
@example(DEEP[0])
@example(DEEP[1])
@example(DEEP[2])
@example(b'{"ignition": {"version": "3.\\ud800.0"}}')
def test_ignition_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    ignition_ok(tmp_path, data)


@FUZZ
@given(edits(len(EXAMPLE_IGNITION)))
def test_ignition_mutated_bytes(tmp_path: Path, changes: List[Tuple[int, int]]) -> None:
    ignition_ok(tmp_path, mutate(EXAMPLE_IGNITION, changes))


@FUZZ
@given(st.sampled_from(_paths(json.loads(EXAMPLE_IGNITION))), json_values)
def test_ignition_wrong_shapes(tmp_path: Path, path: Tuple[Any, ...], value: Any) -> None:
    doc = _swap(json.loads(EXAMPLE_IGNITION), path, value)
    ignition_ok(tmp_path, json.dumps(doc).encode())
