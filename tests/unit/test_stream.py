"""nestos_stream: examples validate against the JSON Schema, parsing errors, selection."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

import jsonschema
import pytest

from nestos_stream import (
    DEFAULT_BASE_URL,
    EXAMPLES_DIR,
    SCHEMA_PATH,
    Artifact,
    Stream,
    StreamError,
    load,
    signature_url,
    stream_url,
)

SRC = "http://mirror.test/streams/2403-LTS.json"
HEX = "ab" * 32


def schema() -> Dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def small() -> Dict[str, Any]:
    art = {"location": "http://m/x.raw.xz", "signature": "http://m/x.raw.xz.sig", "sha256": HEX}
    return {
        "stream": "2403-LTS",
        "metadata": {"last-modified": "2024-09-04T08:00:00Z"},
        "architectures": {
            "x86_64": {
                "artifacts": {
                    "metal": {"release": "1", "formats": {"raw.xz": {"disk": art}}},
                    "qemu": {"release": "1", "formats": {"qcow2.xz": {"disk": art}}},
                }
            },
            "aarch64": {
                "artifacts": {"metal": {"release": "1", "formats": {"iso": {"disk": art}}}}
            },
        },
    }


def test_examples_validate_and_parse() -> None:
    examples = sorted(EXAMPLES_DIR.glob("*.json"))
    assert examples
    validator = jsonschema.Draft202012Validator(schema())
    validator.check_schema(schema())
    for path in examples:
        doc = json.loads(path.read_text())
        validator.validate(doc)
        stream = Stream.from_json(path.read_bytes(), str(path))
        assert set(stream.architectures) == set(doc["architectures"])
        assert Stream.from_dict(stream.to_dict(), "roundtrip") == stream


def test_example_has_the_nestos_shape() -> None:
    stream = Stream.from_json((EXAMPLES_DIR / "2403-LTS.json").read_bytes(), "example")
    assert stream.stream == "2403-LTS"
    for arch in ("x86_64", "aarch64"):
        metal = stream.select(arch, "metal", "pxe")
        assert list(metal) == ["initramfs", "kernel", "rootfs"]
        for fmt in ("raw.xz", "4k.raw.xz", "iso"):
            assert set(stream.select(arch, "metal", fmt)) == {"disk"}
        for platform in ("qemu", "openstack", "huaweicloud"):
            assert "qcow2.xz" in stream.architectures[arch].artifacts[platform].formats
    assert "aliyun" in stream.architectures["x86_64"].artifacts
    assert "vmware" in stream.architectures["x86_64"].artifacts


def test_rows_sorted_and_complete() -> None:
    stream = Stream.from_dict(small(), SRC)
    assert stream.rows() == [
        ("aarch64", "metal", "iso"),
        ("x86_64", "metal", "raw.xz"),
        ("x86_64", "qemu", "qcow2.xz"),
    ]


def test_select_returns_artifacts() -> None:
    stream = Stream.from_dict(small(), SRC)
    sel = stream.select("x86_64", "metal", "raw.xz")
    assert sel == {"disk": Artifact("http://m/x.raw.xz", "http://m/x.raw.xz.sig", HEX, None)}


@pytest.mark.parametrize(
    "arch,platform,fmt,message",
    [
        (
            "ppc64le",
            "metal",
            "raw.xz",
            "no architecture 'ppc64le' in stream 2403-LTS; available: aarch64, x86_64",
        ),
        (
            "x86_64",
            "aws",
            "raw.xz",
            "no platform 'aws' for x86_64 in stream 2403-LTS; available: metal, qemu",
        ),
        (
            "x86_64",
            "qemu",
            "iso",
            "no format 'iso' for platform 'qemu' on x86_64; available: qcow2.xz",
        ),
    ],
)
def test_select_lists_what_exists(arch: str, platform: str, fmt: str, message: str) -> None:
    stream = Stream.from_dict(small(), SRC)
    with pytest.raises(StreamError) as e:
        stream.select(arch, platform, fmt)
    assert str(e.value) == message


def test_not_json() -> None:
    with pytest.raises(StreamError) as e:
        Stream.from_json(b"<html>502 Bad Gateway</html>", SRC)
    msg = str(e.value)
    assert msg.startswith(f"stream metadata from {SRC}: not valid JSON")
    assert "\n" not in msg


def _broken(path: str, value: Any) -> Dict[str, Any]:
    """small() with the key at dotted `path` deleted (value None) or replaced."""
    doc = copy.deepcopy(small())
    keys = path.split("/")
    node = doc
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


DISK = "architectures/x86_64/artifacts/metal/formats/raw.xz/disk"


@pytest.mark.parametrize(
    "path,value,message",
    [
        (
            f"{DISK}/location",
            None,
            "architectures.x86_64.artifacts.metal.formats.raw.xz.disk: missing 'location'",
        ),
        (
            f"{DISK}/location",
            5,
            "architectures.x86_64.artifacts.metal.formats.raw.xz.disk: 'location' must be a "
            "string, found a number",
        ),
        (
            f"{DISK}/sha256",
            "xyz",
            "architectures.x86_64.artifacts.metal.formats.raw.xz.disk: 'sha256' is not 64 hex "
            "digits",
        ),
        (
            "architectures/x86_64/artifacts/metal/release",
            None,
            "architectures.x86_64.artifacts.metal: missing 'release'",
        ),
        (
            "architectures/x86_64/artifacts",
            [],
            "architectures.x86_64: 'artifacts' must be an object, found an array",
        ),
        ("architectures", None, "missing 'architectures'"),
        ("stream", True, "'stream' must be a string, found a boolean"),
    ],
)
def test_bad_fields_one_clear_line(path: str, value: Any, message: str) -> None:
    doc = _broken(path, value)
    with pytest.raises(StreamError) as e:
        Stream.from_json(json.dumps(doc), SRC)
    assert str(e.value) == f"stream metadata from {SRC}: {message}"
    # The schema agrees that the document is invalid.
    assert list(jsonschema.Draft202012Validator(schema()).iter_errors(doc))


def test_unknown_fields_ignored() -> None:
    doc = small()
    doc["new-top"] = {"x": 1}
    doc["architectures"]["x86_64"]["rhel-coreos-extensions"] = {}
    doc["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.xz"]["disk"]["x"] = 1
    jsonschema.Draft202012Validator(schema()).validate(doc)
    stream = Stream.from_dict(doc, SRC)
    assert stream.rows() == Stream.from_dict(small(), SRC).rows()


def test_stream_url() -> None:
    assert stream_url(DEFAULT_BASE_URL, "2403-LTS") == (
        "https://nestos.org.cn/NestOS-release/streams/2403-LTS.json"
    )
    assert stream_url("http://m/a/streams", "x") == "http://m/a/streams/x.json"
    assert stream_url("http://m/a/streams/", "x") == "http://m/a/streams/x.json"
    for bad in ("", "../x", "a/b"):
        with pytest.raises(StreamError):
            stream_url("http://m/", bad)


@pytest.mark.parametrize(
    "url,sig",
    [
        ("http://h/f.img", "http://h/f.img.sig"),
        ("http://h/f.img?x=1", "http://h/f.img.sig?x=1"),
        ("https://h/d/f.raw.xz?a=1&b=2#frag", "https://h/d/f.raw.xz.sig?a=1&b=2#frag"),
        ("http://h:8080/p%20q.iso?sig=a.b", "http://h:8080/p%20q.iso.sig?sig=a.b"),
    ],
)
def test_signature_url_appends_to_the_path(url: str, sig: str) -> None:
    assert signature_url(url) == sig
    assert Artifact.from_url(url) == Artifact(url, signature=sig)


def test_load_through_any_transport() -> None:
    asked = []

    def get(url: str) -> bytes:
        asked.append(url)
        return json.dumps(small()).encode()

    stream = load(get, "2403-LTS", "http://mirror.test/streams")
    assert asked == [SRC]
    assert stream == Stream.from_dict(small(), SRC)
    disk = stream.select("x86_64", "metal", "raw.xz")["disk"]
    assert disk == Artifact("http://m/x.raw.xz", "http://m/x.raw.xz.sig", HEX)
    with pytest.raises(StreamError, match=f"stream metadata from {SRC}: not valid JSON"):
        load(lambda url: b"<html>", "2403-LTS", "http://mirror.test/streams/")
    with pytest.raises(StreamError, match="invalid stream name"):
        load(get, "../etc", "http://mirror.test/streams/")
    assert len(asked) == 1  # a bad name is refused before anything is fetched
