"""Live artifacts: ISO lookup checked against xorriso (with pycdlib and with the record reader the
zipapp uses), PXE directories, kernel architecture, and detached signatures verified with gpgv
against keys the test generates."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from fixtures.hostfacts.liveartifacts import GpgKey, build_iso, build_pxe, fake_kernel
from fixtures.iso import gen_isos
from helpers.capabilities import require_tools
from nestos_installer.errors import (
    BadSignature,
    ImageFormatError,
    NotFound,
    SignatureMissing,
)
from nestos_installer.live.iso9660 import IsoImage
from x2nestos import artifacts


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("xorriso", "cpio")
    d = tmp_path_factory.mktemp("iso")
    return build_iso(d / "live.iso", d / "work")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    require_tools("gpg", "gpgv")
    k = GpgKey.generate(tmp_path_factory.mktemp("gpg"))
    yield k
    k.close()


@pytest.mark.parametrize("use_pycdlib", [True, False])
def test_iso_lookup_matches_xorriso(iso: Path, tmp_path: Path, use_pycdlib: bool) -> None:
    with open(iso, "rb") as fp:
        img = IsoImage(fp, str(iso), pycdlib=use_pycdlib)
        assert img.reader == ("pycdlib" if use_pycdlib else "records")
        assert img.volume_id == "nestos-demo"
        for inner in artifacts.ISO_PXE.values():
            oracle = tmp_path / Path(inner).name
            subprocess.run(
                [
                    "xorriso",
                    "-osirrox",
                    "on",
                    "-indev",
                    str(iso),
                    "-extract",
                    "/" + inner,
                    str(oracle),
                ],
                check=True,
                capture_output=True,
            )
            buf = io.BytesIO()
            img.copy_to(inner, buf)
            assert buf.getvalue() == oracle.read_bytes()
            assert img.head(inner, 100) == oracle.read_bytes()[:100]
        assert img.get("IMAGES/PXEBOOT/VMLINUZ") is not None  # case-insensitive fallback
        with pytest.raises(NotFound):
            img.lookup("images/pxeboot/nothing")
        # `..` resolves inside the image (as upstream does), never outside it
        assert img.get("images/../etc") is None
        up = img.lookup("images/../images/pxeboot/vmlinuz")
        assert up.offset == img.lookup("images/pxeboot/vmlinuz").offset
        assert img.get("/".join(["images"] * 40)) is None  # deeper than any tree we read
        img.close()


def test_from_iso(iso: Path) -> None:
    art = artifacts.from_iso(iso)
    assert art.arch == "x86_64"
    assert set(art.parts) == {"kernel", "initramfs", "rootfs"}
    assert art.parts["kernel"].size == len(fake_kernel())
    assert art.live_kargs == ["ignition.firstboot", "ignition.platform.id=metal"]


@pytest.mark.parametrize("layout", ["s390x", "s390x-00", "nestos"])
def test_from_iso_layouts(tmp_path: Path, layout: str) -> None:
    """The live ISO layouts, including s390x's 0x00 root `..` that pycdlib refuses."""
    require_tools("xorriso")
    art = artifacts.from_iso(Path(gen_isos.build(layout, str(tmp_path))))
    sizes = {n: p.size for n, p in art.parts.items()}
    assert sizes == {"kernel": 30000, "initramfs": 40000, "rootfs": 50000}
    prefix = "nestos" if layout == "nestos" else "coreos"
    assert (art.prefix, art.prefix_source) == (prefix, f"/{prefix.upper()} directory of the ISO")
    assert art.features is not None and art.features["live-initrd-network"] is True
    assert art.live_kargs == [
        "mitigations=auto,nosmt",
        "ignition.firstboot",
        "ignition.platform.id=metal",
    ]
    buf = io.BytesIO()
    art.copy("rootfs", buf)
    assert buf.getvalue() == gen_isos._blob("rootfs", 50000)


@pytest.mark.parametrize(
    "name,data",
    [
        ("features.json", b"[" * 100000),
        ("kargs.json", b'{"default": "\\ud800", "files": [], "size": 10}'),
        ("kargs.json", b'"just a string"'),
    ],
)
def test_from_iso_hostile_metadata(tmp_path: Path, name: str, data: bytes) -> None:
    require_tools("xorriso")
    iso = gen_isos.build("s390x-00", str(tmp_path), replace={f"coreos/{name}": data})
    with pytest.raises(ImageFormatError, match="live image metadata"):
        artifacts.from_iso(Path(iso))


def test_iso_errors(tmp_path: Path) -> None:
    require_tools("xorriso")
    with pytest.raises(NotFound, match="does not exist"):
        artifacts.from_iso(tmp_path / "missing.iso")
    nopxe = build_iso(tmp_path / "nopxe.iso", tmp_path / "w", pxe=False)
    with pytest.raises(ImageFormatError, match="has no /images/pxeboot/vmlinuz"):
        artifacts.from_iso(nopxe)
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"x" * 40000)
    with pytest.raises(ImageFormatError, match="not an ISO9660 image"):
        artifacts.from_iso(junk)


def test_iso_hostile_extent(iso: Path, tmp_path: Path) -> None:
    """A directory record pointing past the end of the file is refused, not followed."""
    data = bytearray(iso.read_bytes())
    root_extent = struct.unpack_from("<I", data, 16 * 2048 + 156 + 2)[0]
    struct.pack_into("<I", data, 16 * 2048 + 156 + 2, len(data) // 2048 + 10)
    bad = tmp_path / "bad.iso"
    bad.write_bytes(bytes(data))
    assert root_extent
    with pytest.raises(ImageFormatError, match="past the end|outside the image|directory tree"):
        artifacts.from_iso(bad)


def test_pxe_dir_and_arch(tmp_path: Path) -> None:
    require_tools("cpio")
    build_pxe(tmp_path / "x86")
    assert artifacts.from_pxe_dir(tmp_path / "x86").arch == "x86_64"
    build_pxe(tmp_path / "arm", arch="aarch64")
    assert artifacts.from_pxe_dir(tmp_path / "arm").arch == "aarch64"
    assert artifacts.kernel_arch(b"\0" * 4096) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound, match="no live kernel"):
        artifacts.from_pxe_dir(empty)


def test_signatures(iso: Path, key: GpgKey, tmp_path: Path) -> None:
    copy = tmp_path / "live.iso"
    copy.write_bytes(iso.read_bytes())
    keys = [key.public.read_bytes()]
    with pytest.raises(SignatureMissing):
        artifacts.verify_artifacts(artifacts.from_iso(copy), keys, insecure=False)
    art = artifacts.from_iso(copy)
    artifacts.verify_artifacts(art, keys, insecure=True)
    assert "NOT verified" in art.verification[0]
    key.sign(copy)
    art = artifacts.from_iso(copy)
    artifacts.verify_artifacts(art, keys, insecure=False)
    assert art.verification == [f"ISO: good signature from {key.fingerprint}"]
    other = GpgKey.generate(tmp_path / "other", "someone else")
    try:
        with pytest.raises(BadSignature, match="not trusted"):
            artifacts.verify_artifacts(
                artifacts.from_iso(copy), [other.public.read_bytes()], insecure=False
            )
    finally:
        other.close()
    with open(copy, "r+b") as f:  # flip one data byte: the signature must fail, even --insecure
        pos = copy.stat().st_size - 4096
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(BadSignature, match="bad signature"):
        artifacts.verify_artifacts(artifacts.from_iso(copy), keys, insecure=True)


def test_pxe_signatures_each_file(tmp_path: Path, key: GpgKey) -> None:
    require_tools("cpio")
    files = build_pxe(tmp_path / "pxe")
    for p in files.values():
        key.sign(p)
    art = artifacts.from_pxe_dir(tmp_path / "pxe")
    artifacts.verify_artifacts(art, [key.public.read_bytes()], insecure=False)
    assert len(art.verification) == 3
    files["rootfs"].with_name("rootfs.img.sig").unlink()
    with pytest.raises(SignatureMissing, match="rootfs.img"):
        artifacts.verify_artifacts(
            artifacts.from_pxe_dir(tmp_path / "pxe"), [key.public.read_bytes()], insecure=False
        )
