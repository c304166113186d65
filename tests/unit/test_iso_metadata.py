"""Live-media JSON metadata (features.json, igninfo.json, kargs.json): bounded parsing, shape
checks, and property tests on arbitrary and mutated bytes (a parser either returns a clean
dataclass or raises ImageFormatError; never RecursionError, UnicodeEncodeError, KeyError...)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.fuzz import FUZZ, edits, mutate
from nestos_installer.errors import ImageFormatError
from nestos_installer.live.metadata import (
    KARG_MAX,
    Features,
    IgnInfo,
    KargArea,
    KargsInfo,
    load_json,
    load_object,
)

DEEP = [b"[" * 100000, b'{"a":' * 50000, b"[" * 2000 + b"]" * 2000]
KARGS = json.dumps(
    {
        "default": "mitigations=auto,nosmt coreos.liveiso=x ignition.firstboot",
        "files": [
            {"path": "EFI/fedora/grub.cfg", "offset": 100},
            {"path": "images/cdboot.img", "offset": 66688, "pad": "\0", "end": "\0"},
        ],
        "size": 1139,
    }
).encode()
FEATURES = b'{"installer-config": true, "installer-config-directives": {"console": true}}'
IGNINFO = b'{"file": "images/cdboot.img", "offset": 132096, "length": 262144}'


@pytest.mark.parametrize("data", DEEP)
@pytest.mark.parametrize("parse", [Features.from_json, IgnInfo.from_json, KargsInfo.from_json])
def test_deep_nesting_is_a_format_error(parse, data):
    with pytest.raises(ImageFormatError, match="nested too deeply"):
        parse(data)


@pytest.mark.parametrize(
    "doc",
    [
        b'{"default": "\\ud800", "files": [], "size": 10}',
        b'{"default": "a", "files": [{"path": "x", "offset": 0, "pad": "\\udc00"}], "size": 10}',
        b'{"default": "a", "files": [{"path": "\\udfff", "offset": 0}], "size": 10}',
        b'{"\\ud800": 1, "default": "a", "files": [], "size": 10}',
    ],
)
def test_lone_surrogates_refused(doc):
    with pytest.raises(ImageFormatError, match="invalid kargs.json: a string is not valid Unicode"):
        KargsInfo.from_json(doc)


def test_shapes_and_bounds():
    assert KargsInfo.from_json(KARGS).areas[1] == KargArea(66688, b"\0", b"\0", "images/cdboot.img")
    assert IgnInfo.from_json(IGNINFO) == IgnInfo("images/cdboot.img", 132096, 262144)
    assert IgnInfo.from_json(b'{"file": "x"}') == IgnInfo("x", 0, None)
    assert Features.from_json(FEATURES).console and not Features.from_json(None).console
    bad = [
        (KargsInfo.from_json, b"[]", "not a JSON object"),
        (KargsInfo.from_json, b'{"default": "a", "files": [], "size": true}', "bad types"),
        (KargsInfo.from_json, b'{"default": "a", "files": {}, "size": 1}', "bad types"),
        (KargsInfo.from_json, b'{"default": "a", "files": [], "size": 4096}', "larger than 2048"),
        (KargsInfo.from_json, b'{"default": "a", "files": [1], "size": 4}', "bad file entry"),
        (
            KargsInfo.from_json,
            b'{"default": "a", "files": [{"path": "p", "offset": 0, "pad": 35}], "size": 4}',
            "pad/end must be one byte",
        ),
        (
            KargsInfo.from_json,
            b'{"default": "a", "files": [{"path": "p", "offset": 0, "end": "\\u00e9"}], "size": 4}',
            "pad/end must be one byte",
        ),
        (IgnInfo.from_json, b'{"file": "x", "offset": -1}', "outside x"),
        (IgnInfo.from_json, b'{"file": "x", "offset": false}', "outside x"),
        (IgnInfo.from_json, b'{"file": "x", "length": "1"}', "outside x"),
        (IgnInfo.from_json, b'{"file": ""}', "has no file"),
        (Features.from_json, b'{"installer-config-directives": [1]}', "directives"),
        (Features.from_json, b"\xff\xfe", "parsing features.json"),
        (Features.from_json, b" " * (2 << 20), "too large"),
    ]
    for parse, data, msg in bad:
        with pytest.raises(ImageFormatError, match=msg):
            parse(data)


def test_load_json_limits():
    assert load_json(b"[" * 32 + b"]" * 32, "x") == load_json(b"[" * 32 + b"]" * 32, "x")
    with pytest.raises(ImageFormatError, match="nested too deeply"):
        load_json(b"[" * 33 + b"]" * 33, "x")  # parses in json, refused by the depth bound
    with pytest.raises(ImageFormatError, match="too many values"):
        load_json(json.dumps(list(range(70000))).encode(), "x")
    with pytest.raises(ImageFormatError, match="x is too large"):
        load_json(b"1", "x", limit=0)
    assert load_object(b'{"a": [1]}', "x") == {"a": [1]}


def _check_clean(parse, data):
    try:
        got = parse(data)
    except ImageFormatError:
        return None
    if isinstance(got, KargsInfo):
        assert 0 <= got.size <= KARG_MAX and len(got.default.encode()) <= got.size
        assert all(len(a.pad) == 1 and len(a.end) == 1 and a.offset >= 0 for a in got.areas)
    if isinstance(got, IgnInfo):
        assert got.offset >= 0 and (got.length is None or got.length >= 0) and got.file
    return got


PARSERS = st.sampled_from([Features.from_json, IgnInfo.from_json, KargsInfo.from_json])
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(), max_size=20)
    | st.sampled_from(["\ud800", "\udc00", "#", "\0", "images/cdboot.img"])
)
KEYS = st.sampled_from(["size", "default", "files", "path", "offset", "pad", "end", "file"])
DOCS = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(KEYS | st.text(), inner, max_size=6)
    ),
    max_leaves=30,
)


@FUZZ
@given(parse=PARSERS, data=st.binary(max_size=2048))
def test_arbitrary_bytes(parse, data):
    _check_clean(parse, data)


@FUZZ
@given(parse=PARSERS, doc=DOCS)
def test_arbitrary_json_documents(parse, doc):
    _check_clean(parse, json.dumps(doc).encode())


@FUZZ
@given(
    which=st.sampled_from([(KargsInfo.from_json, KARGS), (IgnInfo.from_json, IGNINFO)]),
    changes=st.data(),
)
def test_mutated_documents(which, changes):
    parse, good = which
    _check_clean(parse, mutate(good, changes.draw(edits(len(good)))))
