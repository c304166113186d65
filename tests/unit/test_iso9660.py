"""ISO9660 lookups (pycdlib and the directory-record reader) and embed-area discovery on
generated fixtures, including hostile directory records and metadata."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.fuzz import FUZZ, edits, mutate
from nestos_installer.errors import ImageFormatError, InputRefused, NestosError, NotFound
from nestos_installer.live.embed import LiveIso
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.iso9660 import SECTOR, IsoImage, parse_directory

LAYOUTS = ("nestos", "2021-01", "2020-09", "s390x", "s390x-00", "synthetic")


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    require_tools("xorriso")
    d = str(tmp_path_factory.mktemp("iso"))
    return {n: build(n, d) for n in LAYOUTS}


def _root(data: bytes):
    """(byte offset, length) of the root directory, from the primary volume descriptor."""
    extent, length = (
        struct.unpack_from("<I", data, 16 * SECTOR + 156 + 2)[0],
        struct.unpack_from("<I", data, 16 * SECTOR + 156 + 10)[0],
    )
    return extent * SECTOR, length


def _record_named(data: bytes, directory: int, name: bytes) -> int:
    pos = directory
    while data[pos]:
        n = data[pos + 32]
        if data[pos + 33 : pos + 33 + n].split(b";")[0] == name:
            return pos
        pos += data[pos]
    raise AssertionError(name)


@pytest.mark.parametrize("layout", [n for n in LAYOUTS if n != "s390x-00"])
def test_readers_agree(isos, layout):
    """pycdlib and the record reader see the same tree, names and extents."""
    with open(isos[layout], "rb") as fp:
        lib, rec = IsoImage(fp), IsoImage(fp, pycdlib=False)
        assert (lib.reader, rec.reader) == ("pycdlib", "records")
        paths = lib.records()
        assert paths == rec.records() and len(paths) > 8
        assert [lib.lookup(p) for p in paths] == [rec.lookup(p) for p in paths]
        for d in [p for p in paths if lib.lookup(p).is_dir]:
            assert lib.listdir(d) == rec.listdir(d)
        lib.close()
        rec.close()


def test_s390x_root_dotdot_00(isos):
    """The CoreOS toolchain's s390x ISOs name the root `..` 0x00: pycdlib (1.x) refuses them,
    the record reader takes over and every embed area is found."""
    import pycdlib

    data = open(isos["s390x-00"], "rb").read()
    root, _ = _root(data)
    dotdot = root + data[root]
    assert data[dotdot + 32 : dotdot + 34] == b"\x01\x00"  # one-byte identifier 0x00
    with open(isos["s390x-00"], "rb") as fp:
        try:
            pycdlib.PyCdlib().open_fp(fp)
            refused = False
        except Exception:  # noqa: BLE001 - "Failed adding duplicate name to parent"
            refused = True
        img = IsoImage(fp)
        assert img.reader == ("records" if refused else "pycdlib")
        with open(isos["s390x"], "rb") as plain:
            assert set(img.records()) == set(IsoImage(plain).records()) | {"COREOS/MINISO.DAT"}
        iso = LiveIso(fp)
        cd = iso.iso.lookup("images/cdboot.img")
        assert iso.initrd_area.offset == cd.offset + 132096 and iso.initrd_area.length == 262144
        assert iso.kargs is not None and iso.kargs.areas[0].offset == cd.offset + 66688
        assert "coreos.liveiso=nestos-fixture" in iso.current_kargs()
        assert iso.features.installer_config and iso.miniso_data() is not None
        assert [os.path.basename(f.path) for f in img.listdir("images/pxeboot")] == [
            "INITRD.IMG",
            "ROOTFS.IMG",
            "VMLINUZ",
        ]


@pytest.mark.parametrize("use_pycdlib", [True, False])
def test_rock_ridge_name_resolves_truncated_dir(isos, use_pycdlib):
    with open(isos["nestos"], "rb") as fp:
        img = IsoImage(fp, pycdlib=use_pycdlib)
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
        with pytest.raises(InputRefused, match=f"kargs too large for area: {size + 1} vs {size}"):
            iso.kargs_writes(iso.require_kargs().default + " " + "x" * (free + 1))


def test_initrd_area_too_large(isos):
    with open(isos["nestos"], "rb") as fp:
        iso = LiveIso(fp)
        with pytest.raises(InputRefused, match=r"Compressed initramfs is too large: \d+ > 262144"):
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


def _hostile(isos, tmp_path, edit):
    data = bytearray(open(isos["synthetic"], "rb").read())
    edit(data)
    p = tmp_path / "hostile.iso"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("use_pycdlib", [True, False])
def test_directory_loop_refused(isos, tmp_path, use_pycdlib):
    def loop(data):
        root, _ = _root(data)
        pos = _record_named(bytes(data), root, b"DIR0")
        data[pos + 2 : pos + 10] = struct.pack("<I", root // SECTOR) + struct.pack(
            ">I", root // SECTOR
        )

    with open(_hostile(isos, tmp_path, loop), "rb") as fp:
        img = IsoImage(fp, pycdlib=use_pycdlib)
        with pytest.raises(ImageFormatError, match="loops"):
            img.lookup("DIR0/DIR0/README.TXT")
        with pytest.raises(ImageFormatError, match="loops"):
            img.records()


@pytest.mark.parametrize(
    "where,value,msg",
    [
        ("root-extent", 10**6, "directory tree"),  # root directory past the end of the file
        ("dir-extent", 10**6, "extends past end of image"),  # a subdirectory past the end
        ("dir-length", 1 << 30, "too large"),  # a 1 GiB directory
        ("record-length", 20, "directory tree"),  # a root record shorter than its header
    ],
)
def test_hostile_records_refused(isos, tmp_path, where, value, msg):
    def edit(data):
        root, _ = _root(data)
        pos = _record_named(bytes(data), root, b"DIR1")
        if where == "root-extent":
            struct.pack_into("<I", data, 16 * SECTOR + 156 + 2, value)
        elif where == "dir-extent":
            struct.pack_into("<I", data, pos + 2, value)
        elif where == "dir-length":
            struct.pack_into("<I", data, pos + 10, value)
        else:
            data[pos] = value

    with open(_hostile(isos, tmp_path, edit), "rb") as fp:
        with pytest.raises(ImageFormatError, match=msg):
            img = IsoImage(fp, pycdlib=False)
            img.records()


def test_not_an_iso(tmp_path):
    p = tmp_path / "junk.iso"
    p.write_bytes(b"x" * 40000)
    with pytest.raises(ImageFormatError, match=f"{p} is not an ISO9660 image"):
        IsoImage.open(p)
    with open(p, "rb") as fp, pytest.raises(ImageFormatError, match="Unrecognized NestOS ISO"):
        IsoImage(fp)


def test_parse_directory_records():
    def rec(name: bytes, extent: int, flags: int = 0, sua: bytes = b"") -> bytes:
        pad = b"\0" if len(name) % 2 == 0 else b""
        body = struct.pack("<I", extent) + struct.pack(">I", extent) + struct.pack("<I", 7)
        body += struct.pack(">I", 7) + bytes(7) + bytes([flags, 0, 0]) + b"\x01\0\0\x01"
        out = body + bytes([len(name)]) + name + pad + sua
        return bytes([len(out) + 2, 0]) + out

    dot, dotdot00 = rec(b"\0", 20, 2), rec(b"\0", 20, 2)  # s390x: `..` named like `.`
    nm = b"NM" + bytes([5 + 9, 1, 0]) + b"kargs.json"[:9]
    data = dot + dotdot00 + rec(b"KARGS.JSO;1", 30, 0, nm) + rec(b"SUB", 40, 2)
    got = parse_directory(data + bytes(SECTOR - len(data)))
    assert [(r.name, r.rr_name, r.extent, r.length, r.is_dir) for r in got] == [
        ("KARGS.JSO", "kargs.jso", 30, 7, False),
        ("SUB", None, 40, 7, True),
    ]
    with pytest.raises(ImageFormatError, match="bad directory record length"):
        parse_directory(data[:-3])


@FUZZ
@given(data=st.binary(max_size=3 * SECTOR))
def test_parse_directory_arbitrary_bytes(data):
    try:
        recs = parse_directory(data)
    except ImageFormatError:
        return
    assert all(r.extent < 2**32 and r.length < 2**32 for r in recs)


@pytest.fixture(scope="module")
def metadata_span(isos):
    """The s390x-00 image and the bytes the record reader parses: descriptors, root directory."""
    data = open(isos["s390x-00"], "rb").read()
    root, length = _root(data)
    assert root > 16 * SECTOR
    return data, root + length


@FUZZ
@given(changes=st.data(), use_pycdlib=st.booleans())
def test_mutated_iso_reads_cleanly_or_refuses(metadata_span, changes, use_pycdlib):
    """Byte flips in the descriptors and directories: a clean tree or a typed error."""
    data, end = metadata_span
    start = 16 * SECTOR
    bad = mutate(data, changes.draw(edits(end - start)), start)
    try:
        img = IsoImage(io.BytesIO(bad), pycdlib=use_pycdlib)
        for p in img.records():
            f = img.lookup(p)
            assert 0 <= f.offset and f.offset + f.length <= len(bad)
        img.get("images/pxeboot/vmlinuz")
    except NestosError:
        pass
