"""Black-box `nestos-installer list-stream`: the §2.3 table, --json, and bad metadata."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, Iterator

import pytest

from helpers.httpserver import TestServer
from helpers.tools import NESTOS_INSTALLER

INSTALLER = NESTOS_INSTALLER


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [INSTALLER, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def art(name: str) -> Dict[str, Any]:
    return {"disk": {"location": f"http://m/{name}", "signature": f"http://m/{name}.sig"}}


STREAM = {
    "stream": "2403-LTS",
    "metadata": {"last-modified": "2024-09-04T08:00:00Z"},
    "architectures": {
        "x86_64": {
            "artifacts": {
                "qemu": {"release": "24.03.2", "formats": {"qcow2.xz": art("q")}},
                "metal": {
                    "release": "24.03.1",
                    "formats": {
                        "raw.xz": art("r"),
                        "4k.raw.xz": art("r4"),
                        "iso": art("i"),
                        "pxe": {"kernel": art("k")["disk"], "initramfs": art("n")["disk"]},
                    },
                },
            }
        },
        "aarch64": {
            "artifacts": {
                "metal": {"release": "24.03.1", "formats": {"raw.xz": art("ra"), "pxe": art("p")}},
                "huaweicloud": {"release": "24.03.1", "formats": {"qcow2.xz": art("h")}},
            }
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    with TestServer() as srv:
        srv.add("streams/2403-LTS.json", json.dumps(STREAM).encode())
        srv.add("streams/broken.json", b'{"stream": "broken", "architectures": {"x86_64": 3}}')
        yield srv


def test_table_exactly(server: TestServer) -> None:
    proc = cli("list-stream", "--stream-base-url", server.url("streams"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Architecture  Platform     Format",
        "aarch64       huaweicloud  qcow2.xz",
        "aarch64       metal        pxe",
        "aarch64       metal        raw.xz",
        "x86_64        metal        4k.raw.xz",
        "x86_64        metal        iso",
        "x86_64        metal        pxe",
        "x86_64        metal        raw.xz",
        "x86_64        qemu         qcow2.xz",
    ]


def test_json(server: TestServer) -> None:
    proc = cli(
        "list-stream", "-s", "2403-LTS", "--stream-base-url", server.url("streams/"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["stream"] == "2403-LTS"
    rows = [(r["architecture"], r["platform"], r["format"], r["release"]) for r in doc["images"]]
    assert rows == sorted(rows)
    assert ("x86_64", "qemu", "qcow2.xz", "24.03.2") in rows
    assert len(rows) == 8


def test_bad_metadata_one_line(server: TestServer) -> None:
    proc = cli("list-stream", "-s", "broken", "--stream-base-url", server.url("streams/"))
    assert proc.returncode == 1
    url = server.url("streams/broken.json")
    assert proc.stderr.splitlines() == [
        f"Error: stream metadata from {url}: architectures.x86_64: expected an object, "
        "found a number"
    ]


def test_missing_stream(server: TestServer) -> None:
    proc = cli("list-stream", "-s", "gone", "--stream-base-url", server.url("streams/"))
    assert proc.returncode == 1
    url = server.url("streams/gone.json")
    assert proc.stderr.splitlines()[0] == (
        f"Error: stream metadata fetch failed: 404 Not Found ({url})"
    )


def test_closed_pipe_is_quiet(server: TestServer) -> None:
    argv = [INSTALLER, "list-stream", "--stream-base-url", server.url("streams/")]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        err = p.stderr.read()
        p.wait(timeout=60)
    # click turns EPIPE into a quiet exit; nothing may reach stderr.
    assert err == b""
