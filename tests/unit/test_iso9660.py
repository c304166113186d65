"""ISO9660 lookups and embed-area discovery on generated fixtures, including hostile metadata."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from nestos_installer.errors import ImageFormatError, NotFound, UsageError
from nestos_installer.live.embed import LiveIso
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.iso9660 import IsoImage


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    require_tools("xorriso")
    d = str(tmp_path_factory.mktemp("iso"))
    return {n: build(n, d) for n in ("nestos", "2021-01", "2020-09", "s390x", "synthetic")}


def test_rock_ridge_name_resolves_truncated_dir(isos):
    with open(isos["nestos"], "rb") as fp:
        img = IsoImage(fp)
        assert "EFI/OPENEULE/GRUB.CFG" in img.records()
        a = img.lookup("EFI/openEuler/grub.cfg")
        b = img.lookup("EFI/OPENEULE/GRUB.CFG")
        assert a.offset == b.offset and a.offset % 2048 == 0 and a.length > 0
        assert img.read("nestos/igninfo.json") == img.read("NESTOS/IGNINFO.JSO")
        assert img.lookup("./images/../images/ignition.img").length == 262144
        with pytest.raises(NotFound):
            img.lookup("EFI/fedora/grub.cfg")
        img.close()


def test_descriptors_and_volume_id(isos):
    with open(isos["synthetic"], "rb") as fp:
        img = IsoImage(fp)
        assert img.volume_id == "nestos-fixture"
        assert img.descriptors[0]["type"] == "primary"
        assert [r for r in img.records() if r.startswith("DIR1/")][:2] == [
            "DIR1/FILE20.TXT",
            "DIR1/FILE21.TXT",
        ]
        img.close()


def test_incomplete_iso(isos, tmp_path):
    p = tmp_path / "cut.iso"
    with open(isos["synthetic"], "rb") as f:
        p.write_bytes(f.read()[: 100 * 2048])
    with open(p, "rb") as fp, pytest.raises(ImageFormatError, match="ISO image is incomplete"):
        IsoImage(fp)


def test_legacy_karg_header_and_s390x_areas(isos):
    with open(isos["2021-01"], "rb") as fp:
        iso = LiveIso(fp)
        assert iso.kargs is not None and len(iso.kargs.areas) == 2
        assert "coreos.liveiso=nestos-fixture" in iso.current_kargs()
    with open(isos["s390x"], "rb") as fp:
        iso = LiveIso(fp)
        cd = iso.iso.lookup("images/cdboot.img")
        assert iso.initrd_area.offset == cd.offset + 132096
        assert iso.kargs is not None and iso.kargs.areas[0].pad == b"\0"
        ((off, data),) = iso.kargs_writes("a b")
        assert off == cd.offset + 66688 and data == b"a b\0" + bytes(896 - 4)
    with open(isos["2020-09"], "rb") as fp:
        iso = LiveIso(fp)
        assert iso.kargs is None
        with pytest.raises(ImageFormatError, match="No karg embed areas found"):
            iso.current_kargs()


def test_karg_area_bounds(isos):
    with open(isos["nestos"], "rb") as fp:
        iso = LiveIso(fp)
        size = iso.require_kargs().size
        free = size - len(iso.require_kargs().default) - 2
        iso.kargs_writes(iso.require_kargs().default + " " + "x" * free)
        with pytest.raises(UsageError, match=f"kargs too large for area: {size + 1} vs {size}"):
            iso.kargs_writes(iso.require_kargs().default + " " + "x" * (free + 1))


def test_initrd_area_too_large(isos):
    with open(isos["nestos"], "rb") as fp:
        iso = LiveIso(fp)
        with pytest.raises(UsageError, match=r"Compressed initramfs is too large: \d+ > 262144"):
            iso.initrd_writes(Initrd({"config.ign": os.urandom(300000)}))


def _custom_iso(tmp_path, igninfo=None, kargs=None, files=None):
    root = tmp_path / "root"
    (root / "nestos").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images" / "ignition.img").write_bytes(bytes(4096))
    (root / "grub.cfg").write_bytes(b"x" * 3000)
    if igninfo is not None:
        (root / "nestos" / "igninfo.json").write_text(json.dumps(igninfo))
    if kargs is not None:
        (root / "nestos" / "kargs.json").write_text(json.dumps(kargs))
    out = tmp_path / "h.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", str(out), str(root)],
        check=True,
        capture_output=True,
    )
    return str(out)


@pytest.mark.parametrize(
    "igninfo",
    [
        {"file": "images/ignition.img", "offset": 4000, "length": 200},
        {"file": "images/ignition.img", "offset": -1},
        {"file": "images/ignition.img", "length": 1 << 40},
    ],
)
def test_hostile_igninfo(tmp_path, igninfo):
    require_tools("xorriso")
    with open(_custom_iso(tmp_path, igninfo=igninfo), "rb") as fp:
        with pytest.raises(ImageFormatError):
            assert LiveIso(fp).initrd_area is None  # raises before this


@pytest.mark.parametrize(
    "kargs,msg",
    [
        ({"default": "a", "files": [{"path": "grub.cfg", "offset": 2990}], "size": 100}, "outside"),
        (
            {"default": "a", "files": [{"path": "grub.cfg", "offset": 0}], "size": 4096},
            "larger than 2048",
        ),
        (
            {"default": "a", "files": [{"path": "missing.cfg", "offset": 0}], "size": 10},
            "not found",
        ),
        ({"default": "a" * 20, "files": [{"path": "grub.cfg", "offset": 0}], "size": 10}, "longer"),
    ],
)
def test_hostile_kargs_json(tmp_path, kargs, msg):
    require_tools("xorriso")
    with open(_custom_iso(tmp_path, kargs=kargs), "rb") as fp:
        with pytest.raises(ImageFormatError, match=msg):
            LiveIso(fp)
