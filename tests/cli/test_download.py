"""Black-box `nestos-installer download` against a stream this test builds and serves locally.

Real xz/gzip artifacts, real gpg signatures from a generated key, a real HTTP server that
drops, answers 503 and serves wrong bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from helpers.capabilities import require_tools
from helpers.gpgkeys import TestKey
from helpers.httpserver import TestServer, TlsFiles
from helpers.tools import NESTOS_INSTALLER

INSTALLER = NESTOS_INSTALLER
MiB = 1 << 20


def cli(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [INSTALLER, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    server: TestServer
    key: TestKey
    root: Path
    blobs: Dict[str, bytes]  # served path -> bytes
    raw: Dict[str, bytes]  # served path -> decompressed bytes
    sigs: Dict[str, bytes]  # served path -> its detached signature

    @property
    def base(self) -> str:
        return self.server.url("streams/")

    def publish(
        self, path: str, data: bytes, *, raw: bytes = b"", sign: bool = True, sha256: bool = True
    ) -> Dict[str, str]:
        """Serve `data` (and its .sig) at `path`; return the stream artifact entry."""
        f = self.root / path.replace("/", "_")
        f.write_bytes(data)
        url = self.server.add(path, f)
        self.blobs[path] = data
        self.raw[path] = raw or data
        art = {"location": url, "signature": url + ".sig"}
        if sign:
            self.sigs[path] = self.key.sign(data)
            self.server.add(path + ".sig", self.sigs[path])
        if sha256:
            art["sha256"] = sha(data)
        if raw:
            art["uncompressed-sha256"] = sha(raw)
        return art

    def stream(self, name: str, doc: Dict[str, Any]) -> None:
        self.server.add(f"streams/{name}.json", json.dumps(doc).encode())


def _payload(size: int, seed: int) -> bytes:
    block = hashlib.sha512(str(seed).encode()).digest()
    return os.urandom(size // 2) + block * (size // 2 // len(block))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_tools("gpg", "xz")
    root = tmp_path_factory.mktemp("site")
    key = TestKey.generate(root, "release")
    with TestServer() as server:
        s = Site(server, key, root, {}, {}, {})
        rel = "24.03-LTS.20240904.0"
        b = f"builds/{rel}/x86_64/nestos-{rel}"
        metal = _payload(3 * MiB, 1)
        metal4k = _payload(MiB, 2)
        qcow = _payload(MiB // 2, 3)
        initrd = _payload(MiB // 2, 4)
        formats = {
            "raw.xz": {
                "disk": s.publish(
                    f"{b}-metal.x86_64.raw.xz", lzma.compress(metal, preset=0), raw=metal
                )
            },
            "4k.raw.xz": {
                "disk": s.publish(
                    f"{b}-metal4k.x86_64.raw.xz", lzma.compress(metal4k, preset=0), raw=metal4k
                )
            },
            "iso": {"disk": s.publish(f"{b}-live.x86_64.iso", _payload(MiB, 5))},
            "pxe": {
                "kernel": s.publish(f"{b}-live-kernel-x86_64", _payload(200_000, 6)),
                "initramfs": s.publish(f"{b}-live-initramfs.x86_64.img", gzip.compress(initrd, 1)),
                "rootfs": s.publish(f"{b}-live-rootfs.x86_64.img", _payload(MiB, 7)),
            },
        }
        qemu = {
            "qcow2.xz": {
                "disk": s.publish(
                    f"{b}-qemu.x86_64.qcow2.xz", lzma.compress(qcow, preset=0), raw=qcow
                )
            }
        }
        s.stream(
            "2403-LTS",
            {
                "stream": "2403-LTS",
                "metadata": {"last-modified": "2024-09-04T08:00:00Z"},
                "architectures": {
                    "x86_64": {
                        "artifacts": {
                            "metal": {"release": rel, "formats": formats},
                            "qemu": {"release": rel, "formats": qemu},
                        }
                    }
                },
            },
        )
        try:
            yield s
        finally:
            key.close()


def download(
    site: Site, dest: Path, *args: object, check: bool = True, keyring: bool = True
) -> subprocess.CompletedProcess:
    extra: List[object] = ["--keyring", site.key.public_key_path] if keyring else []
    return cli(
        "download",
        "--stream-base-url",
        site.base,
        "-a",
        "x86_64",
        "-C",
        dest,
        "--progress",
        "none",
        *extra,
        *args,
        check=check,
    )


def leftovers(d: Path) -> List[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".nestos-installer-temp"))


def test_help_fits_80_columns() -> None:
    for cmd in (["download"], ["list-stream"]):
        out = cli(*cmd, "--help").stdout
        assert all(len(line) <= 80 for line in out.splitlines()), out


def served_path(site: Site, local: Path) -> str:
    match = [p for p in site.blobs if p.rsplit("/", 1)[-1] == local.name]
    assert len(match) == 1, local
    return match[0]


@pytest.mark.parametrize(
    "platform,fmt,count",
    [
        ("metal", "raw.xz", 1),
        ("metal", "4k.raw.xz", 1),
        ("metal", "iso", 1),
        ("metal", "pxe", 3),
        ("qemu", "qcow2.xz", 1),
    ],
)
def test_download_every_format(
    site: Site, tmp_path: Path, platform: str, fmt: str, count: int
) -> None:
    proc = download(site, tmp_path, "-p", platform, "-f", fmt)
    paths = [Path(line) for line in proc.stdout.splitlines()]
    assert len(paths) == count, proc.stdout
    for path in paths:
        assert path.parent == tmp_path
        served = served_path(site, path)
        assert path.read_bytes() == site.blobs[served]
        assert Path(f"{path}.sig").read_bytes() == site.sigs[served]
    if fmt == "pxe":  # processed in artifact-type order
        assert [
            "initramfs" in paths[0].name,
            "kernel" in paths[1].name,
            "rootfs" in paths[2].name,
        ] == [True, True, True]
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in paths] + [p.name + ".sig" for p in paths]
    )


def test_existing_file_is_verified_not_fetched(site: Site, tmp_path: Path) -> None:
    first = download(site, tmp_path).stdout.split()
    path = Path(first[0])
    served = served_path(site, path)
    before = len(site.server.requests_for(served))
    assert download(site, tmp_path).stdout.split() == first
    assert len(site.server.requests_for(served)) == before
    assert path.read_bytes() == site.blobs[served]


def test_existing_wrong_file_is_not_clobbered(site: Site, tmp_path: Path) -> None:
    path = Path(download(site, tmp_path).stdout.strip())
    path.write_bytes(b"something else")
    proc = download(site, tmp_path, check=False)
    assert proc.returncode != 0
    assert "already exists and does not verify" in proc.stderr
    assert path.read_bytes() == b"something else"


def test_decompress(site: Site, tmp_path: Path) -> None:
    proc = download(site, tmp_path, "-f", "raw.xz", "-d")
    path = Path(proc.stdout.strip())
    assert path.name.endswith(".x86_64.raw")
    served = [p for p in site.blobs if p.endswith("-metal.x86_64.raw.xz")][0]
    assert path.read_bytes() == site.raw[served]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    # Again: the decompressed output is checked against uncompressed-sha256, not re-fetched.
    before = len(site.server.requests_for(served))
    assert download(site, tmp_path, "-f", "raw.xz", "-d").stdout.strip() == str(path)
    assert len(site.server.requests_for(served)) == before


def test_decompress_gzip_pxe(site: Site, tmp_path: Path) -> None:
    paths = [Path(p) for p in download(site, tmp_path, "-f", "pxe", "-d").stdout.split()]
    initrd = [p for p in paths if "initramfs" in p.name][0]
    served = served_path(site, initrd)
    # `.img` is no compression suffix: saved as served, even though it is gzip inside.
    assert initrd.read_bytes() == site.blobs[served]


def bad_stream(site: Site, name: str, art: Dict[str, str]) -> None:
    site.stream(
        name,
        {
            "stream": name,
            "architectures": {
                "x86_64": {
                    "artifacts": {"metal": {"release": "1", "formats": {"raw.xz": {"disk": art}}}}
                }
            },
        },
    )


def test_wrong_bytes_refused_by_sha256(site: Site, tmp_path: Path) -> None:
    data = lzma.compress(_payload(MiB, 11), preset=0)
    art = site.publish("corrupt/a.raw.xz", data)
    site.server.behave("corrupt/a.raw.xz", corrupt_at=len(data) // 2)
    bad_stream(site, "corrupt", art)
    proc = download(site, tmp_path, "-s", "corrupt", check=False)
    assert proc.returncode == 1
    assert f"wrong sha256 for a.raw.xz: expected {sha(data)}" in proc.stderr
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_wrong_bytes_refused_by_signature(site: Site, tmp_path: Path) -> None:
    data = _payload(MiB, 12)
    site.publish("corrupt/b.iso", data)
    site.server.behave("corrupt/b.iso", corrupt_at=1000)
    proc = download(site, tmp_path, "-u", site.server.url("corrupt/b.iso"), check=False)
    assert proc.returncode == 1
    assert "GPG verification failure" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_signature_by_untrusted_key_refused(site: Site, tmp_path: Path) -> None:
    site.publish("untrusted/c.iso", _payload(100_000, 13))
    proc = download(
        site,
        tmp_path,
        "-u",
        site.server.url("untrusted/c.iso"),
        "--insecure",
        keyring=False,
        check=False,
    )
    assert proc.returncode == 1
    assert "GPG verification failure" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_signature(site: Site, tmp_path: Path) -> None:
    data = _payload(100_000, 14)
    site.publish("unsigned/d.iso", data, sign=False)
    url = site.server.url("unsigned/d.iso")
    proc = download(site, tmp_path, "-u", url, check=False)
    assert proc.returncode == 1
    assert "--insecure not specified and signature not found" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    proc = download(site, tmp_path, "-u", url, "--insecure")
    assert Path(proc.stdout.strip()).read_bytes() == data
    assert "Signature not found" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.iso"]


def test_url_with_query_gets_signature_next_to_its_path(site: Site, tmp_path: Path) -> None:
    """`-u URL?q`: the signature is at `URL.sig?q` (as upstream and `install` say), never at
    `URL?q.sig` (the server would answer that with the image itself)."""
    data = _payload(150_000, 19)
    site.publish("query/q.iso", data)
    url = site.server.url("query/q.iso") + "?token=abc"
    proc = download(site, tmp_path, "-u", url)
    path = Path(proc.stdout.strip())
    assert path.name == "q.iso" and path.read_bytes() == data
    assert (tmp_path / "q.iso.sig").read_bytes() == site.sigs["query/q.iso"]
    assert len(site.server.requests_for("query/q.iso.sig")) == 1
    assert len(site.server.requests_for("query/q.iso")) == 1  # only the image itself
    assert leftovers(tmp_path) == []


def test_install_plan_names_the_signature_url(tmp_path: Path) -> None:
    url = "http://h.test/d/nestos.raw.xz?token=abc"
    proc = cli("install", "--plan", "--image-url", url, str(tmp_path / "no-such-disk"))
    assert f"source:      URL {url} (signature http://h.test/d/nestos.raw.xz.sig?token=abc)" in (
        proc.stdout
    )


def test_drop_mid_body_resumes(site: Site, tmp_path: Path) -> None:
    data = _payload(3 * MiB, 15)
    site.publish("flaky/e.iso", data)
    site.server.behave("flaky/e.iso", drop_after=MiB + 4321, drop_times=1)
    proc = download(site, tmp_path, "-u", site.server.url("flaky/e.iso"), "--fetch-retries", "2")
    assert Path(proc.stdout.strip()).read_bytes() == data
    ranges = site.server.requests_for("flaky/e.iso")
    assert len(ranges) == 2 and ranges[1] is not None
    assert site.server.bytes_sent("flaky/e.iso") - len(data) < MiB


def test_drop_without_retries_fails_cleanly(site: Site, tmp_path: Path) -> None:
    site.publish("flaky/f.iso", _payload(2 * MiB, 16))
    site.server.behave("flaky/f.iso", drop_after=MiB, drop_times=1)
    proc = download(site, tmp_path, "-u", site.server.url("flaky/f.iso"), check=False)
    assert proc.returncode == 1
    assert "fetch failed" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_503_then_200(site: Site, tmp_path: Path) -> None:
    data = _payload(200_000, 17)
    site.publish("busy/g.iso", data)
    site.server.behave("busy/g.iso", statuses=[503])
    proc = download(
        site,
        tmp_path,
        "-u",
        site.server.url("busy/g.iso"),
        "--fetch-retries",
        "1",
        "--progress",
        "json",
    )
    assert Path(proc.stdout.strip()).read_bytes() == data
    assert len(site.server.requests_for("busy/g.iso")) == 2
    assert "Sleeping 1s and retrying..." in proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert records[-1]["done"] is True and records[-1]["bytes"] == len(data)


def test_404_image(site: Site, tmp_path: Path) -> None:
    url = site.server.url("nothing/here.iso")
    proc = download(site, tmp_path, "-u", url, "--insecure", check=False)
    assert proc.returncode == 1
    assert f"image fetch failed: 404 Not Found ({url})" in proc.stderr


@pytest.mark.parametrize(
    "body,message",
    [
        (b"<html>oops</html>", "not valid JSON"),
        (
            json.dumps(
                {
                    "stream": "x",
                    "architectures": {
                        "x86_64": {
                            "artifacts": {
                                "metal": {
                                    "release": "1",
                                    "formats": {"raw.xz": {"disk": {"signature": "s"}}},
                                }
                            }
                        }
                    },
                }
            ).encode(),
            "architectures.x86_64.artifacts.metal.formats.raw.xz.disk: missing 'location'",
        ),
    ],
)
def test_bad_stream_metadata_one_line(
    site: Site, tmp_path: Path, body: bytes, message: str
) -> None:
    name = f"bad{len(body)}"
    site.server.add(f"streams/{name}.json", body)
    proc = download(site, tmp_path, "-s", name, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    url = site.server.url(f"streams/{name}.json")
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: stream metadata from {url}: ")
    assert message in lines[0]


def test_unknown_architecture_lists_choices(site: Site, tmp_path: Path) -> None:
    proc = cli(
        "download", "--stream-base-url", site.base, "-a", "riscv64", "-C", tmp_path, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: no architecture 'riscv64' in stream 2403-LTS; available: x86_64"
    ]
    proc = cli(
        "download",
        "--stream-base-url",
        site.base,
        "-a",
        "x86_64",
        "-p",
        "qemu",
        "-f",
        "iso",
        "-C",
        tmp_path,
        check=False,
    )
    assert proc.stderr.strip().splitlines() == [
        "Error: no format 'iso' for platform 'qemu' on x86_64; available: qcow2.xz"
    ]


def test_missing_stream(site: Site, tmp_path: Path) -> None:
    proc = download(site, tmp_path, "-s", "nope", check=False)
    assert proc.returncode == 1
    assert "stream metadata fetch failed: 404 Not Found" in proc.stderr


def test_bad_options(tmp_path: Path) -> None:
    proc = cli("download", "--fetch-retries", "lots", "-C", tmp_path, check=False)
    assert proc.returncode == 2 and "lots" in proc.stderr
    proc = cli("download", "-u", "ftp://h/x.iso", "-C", tmp_path, check=False)
    assert proc.returncode == 2
    assert "unknown protocol for URL 'ftp://h/x.iso'" in proc.stderr


def test_https_with_ca_bundle_from_environment(site: Site, tmp_path: Path) -> None:
    tls = TlsFiles.generate(tmp_path)
    data = _payload(300_000, 18)
    out = tmp_path / "out"
    out.mkdir()
    with TestServer(tls=tls) as srv:
        url = srv.add("h.iso", data)
        srv.add("h.iso.sig", site.key.sign(data))
        argv = [
            INSTALLER,
            "download",
            "-u",
            url,
            "-C",
            out,
            "--keyring",
            site.key.public_key_path,
            "--progress",
            "plain",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
        }
        proc = subprocess.run(
            list(map(str, argv)), capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert proc.returncode == 1 and "TLS error" in proc.stderr
        env["REQUESTS_CA_BUNDLE"] = str(tls.ca)
        proc = subprocess.run(
            list(map(str, argv)), capture_output=True, text=True, env=env, timeout=120, check=False
        )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).read_bytes() == data
    kib = f"{len(data) / 1024:.1f} KiB"
    assert f"Read h.iso {kib}/{kib} (100%)" in proc.stderr.splitlines()
