"""The pre-write checks of an install under the dead-man switch (issue 17 item 4), against real
things: a real HTTP server serving good, missing and lying files, real gpg keys, fake host trees
for the target's identity. None of them needs a disk: each fails before one would be opened."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator, List

import pytest

from fixtures.hostfacts.hosttree import GiB, build_host
from helpers.capabilities import require_tools
from helpers.gpgkeys import TestKey
from helpers.httpserver import TestServer
from nestos_installer import prewrite, source
from nestos_installer.deadman import TargetIdentity
from nestos_installer.errors import (
    BadSignature,
    ConfigError,
    FetchError,
    HashMismatch,
    SignatureMissing,
    VerificationError,
)
from nestos_installer.fetch import Fetcher
from nestos_installer.ignition import IgnitionHash
from nestos_installer.install import InstallConfig, load_ignition
from nestos_installer.signature.policy import Keyring

IMAGE = b"NestOS metal image " * 4096
IGN = b'{"ignition": {"version": "3.3.0"}}\n'


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[TestKey]]:
    require_tools("gpg")
    d = tmp_path_factory.mktemp("keys")
    trusted, other = TestKey.generate(d, "release"), TestKey.generate(d, "stranger")
    yield [trusted, other]
    trusted.close()
    other.close()


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer() as s:
        yield s


def _said() -> tuple[List[str], object]:
    lines: List[str] = []
    return lines, lines.append


def test_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048000 kB\nMemAvailable:  1024000 kB\n")
    assert prewrite.check_memory(512 << 20, meminfo) == 1024000 * 1024
    with pytest.raises(prewrite.PrewriteFailed, match="not enough memory: 1000 MiB available"):
        prewrite.check_memory(2 << 30, meminfo)
    meminfo.write_text("MemTotal:  2048000 kB\n")
    with pytest.raises(prewrite.PrewriteFailed, match="no MemAvailable"):
        prewrite.check_memory(1, meminfo)


def test_signature_issuer(keys: List[TestKey], tmp_path: Path) -> None:
    trusted, other = keys
    ring = Keyring([trusted.public_key_path])
    found = prewrite.signature_issuer(trusted.sign(IMAGE), ring)
    assert found.fingerprint == trusted.fingerprint
    with pytest.raises(BadSignature, match="0x" + other.key_id[-16:]):
        prewrite.signature_issuer(other.sign(IMAGE), ring)
    with pytest.raises(BadSignature):
        prewrite.signature_issuer(b"not an OpenPGP signature\n", ring)


def test_signature_issuer_revoked(tmp_path: Path) -> None:
    require_tools("gpg")
    with TestKey.generate(tmp_path, "revoked") as key:
        sig = key.sign(IMAGE)
        key.revoke()
        with pytest.raises(BadSignature, match="revoked"):
            prewrite.signature_issuer(sig, Keyring([key.public_key_path]))


def test_remote_image_signature(keys: List[TestKey], server: TestServer, tmp_path: Path) -> None:
    """A reachable image whose .sig is by a trusted key passes before its data is read (no
    second download); one by another key, or none at all, fails."""
    trusted, other = keys
    ring = Keyring([trusted.public_key_path])
    big = tmp_path / "big.raw"
    big.write_bytes(IMAGE * 512)  # 38 MiB: more than the socket buffers hold
    url = server.add("good.raw", big)
    server.add("good.raw.sig", trusted.sign(big))
    said, say = _said()
    with Fetcher() as f:
        src = source.open_url(f, url, False, say)
        try:
            prewrite.check_signature(src, ring, say)  # type: ignore[arg-type]
        finally:
            src.close()
    assert any("names trusted key" in s for s in said), said
    assert server.bytes_sent("good.raw") < big.stat().st_size // 2
    bad = server.add("bad.raw", IMAGE)
    server.add("bad.raw.sig", other.sign(IMAGE))
    with Fetcher() as f:
        src = source.open_url(f, bad, False, say)
        with pytest.raises(BadSignature, match="not trusted|unknown"):
            prewrite.check_signature(src, ring, say)  # type: ignore[arg-type]
        src.close()
        unsigned = server.add("unsigned.raw", IMAGE)
        with pytest.raises(SignatureMissing):
            source.open_url(f, unsigned, False, say)


def test_image_missing_or_unreachable(server: TestServer) -> None:
    said, say = _said()
    with Fetcher() as f:
        with pytest.raises(FetchError, match="404|not found|Not Found"):
            source.open_url(f, server.url("nothing.raw"), True, say)
        with pytest.raises(FetchError):
            source.open_url(f, "http://127.0.0.1:9/nestos.raw.xz", True, say)


def test_unreachable_signature_fails_before_the_image(server: TestServer) -> None:
    """Without --insecure a signature that cannot be fetched is a missing one, and that ends
    it at once (upstream's message, with the cause; the image is never requested: under the
    dead-man switch the host goes back sooner); with --insecure the install goes on."""
    said, say = _said()
    image = server.add("img.raw", IMAGE)
    with Fetcher() as f:
        missing = "signature not found .signature fetch failed: cannot connect"
        with pytest.raises(SignatureMissing, match=missing):
            source.open_url(f, image, False, say, sig_url="http://127.0.0.1:9/img.raw.sig")
        assert server.requests_for("img.raw") == []  # never asked for
        src = source.open_url(f, image, True, say, sig_url="http://127.0.0.1:9/img.raw.sig")
        src.close()
    assert any(s.startswith("Failed to fetch signature: ") for s in said)


def test_local_image_verified_in_full(keys: List[TestKey], tmp_path: Path) -> None:
    """The live media's own image: verified completely before writing, then rewound."""
    trusted, _ = keys
    ring = Keyring([trusted.public_key_path])
    img = tmp_path / "image.raw"
    img.write_bytes(IMAGE)
    Path(f"{img}.sig").write_bytes(trusted.sign(IMAGE))
    said, say = _said()
    src = source.open_file(img, False, say)
    try:
        prewrite.check_signature(src, ring, say)  # type: ignore[arg-type]
        assert src.reader.tell() == 0 and src.reader.read() == IMAGE
    finally:
        src.close()
    assert any("before writing" in s for s in said)
    img.write_bytes(IMAGE[:-1] + b"!")  # the data changed after signing
    src = source.open_file(img, False, say)
    try:
        with pytest.raises(VerificationError):
            prewrite.check_signature(src, ring, say)  # type: ignore[arg-type]
    finally:
        src.close()


def test_ignition_url_checked(server: TestServer) -> None:
    """Fetched, valid and matching its hash, or the check fails (nothing opened yet)."""
    good = server.add("good.ign", IGN)
    bad = server.add("bad.ign", b"{not json")
    base = {"dest_device": "/dev/null", "insecure_ignition": True}
    with Fetcher() as f:
        assert load_ignition(InstallConfig(ignition_url=good, **base), f) == IGN  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            load_ignition(InstallConfig(ignition_url=bad, **base), f)  # type: ignore[arg-type]
        wrong = IgnitionHash.parse("sha256-" + "0" * 64)
        with pytest.raises(HashMismatch):
            load_ignition(
                InstallConfig(ignition_url=good, ignition_hash=wrong, **base),  # type: ignore[arg-type]
                f,
            )
        with pytest.raises(FetchError):
            load_ignition(InstallConfig(ignition_url=server.url("gone.ign"), **base), f)  # type: ignore[arg-type]


def test_target_identity(tmp_path: Path) -> None:
    """The planned whole disk, its size and serial; never a dm device or a partition."""
    build_host(tmp_path, layout="plain", disk_size=20 * GiB)
    want = TargetIdentity("/dev/vda", 20 * GiB, "x2n-test-disk")
    assert prewrite.check_identity("/dev/vda", want, tmp_path).name == "vda"
    with pytest.raises(prewrite.PrewriteFailed, match="has 21474836480 bytes, the plan saw"):
        prewrite.check_identity("/dev/vda", TargetIdentity("/dev/vda", GiB, None), tmp_path)
    with pytest.raises(prewrite.PrewriteFailed, match="serial 'x2n-test-disk', the plan saw"):
        prewrite.check_identity("/dev/vda", TargetIdentity("/dev/vda", None, "other"), tmp_path)
    with pytest.raises(prewrite.PrewriteFailed, match="partition"):
        prewrite.check_identity("/dev/vda1", want, tmp_path)


def test_target_identity_refuses_lvm(tmp_path: Path) -> None:
    build_host(tmp_path, layout="lvm2")  # a VG over vda2 and vdb1
    with pytest.raises(prewrite.PrewriteFailed, match="LVM logical volume"):
        prewrite.check_identity("/dev/dm-0", TargetIdentity("/dev/vda"), tmp_path)
    with pytest.raises(prewrite.PrewriteFailed, match="the plan named /dev/vda"):
        prewrite.check_identity("/dev/vdb", TargetIdentity("/dev/vda"), tmp_path)


def test_check_signature_insecure_has_nothing_to_check() -> None:
    src = source.ImageSource(io.BytesIO(IMAGE), "test", "test", len(IMAGE), None)
    said, say = _said()
    prewrite.check_signature(src, Keyring([]), say)  # type: ignore[arg-type]
    assert said == []
