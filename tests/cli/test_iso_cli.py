"""Black-box `nestos-installer iso ...` tests on generated ISOs of every historic layout."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import pty
import shutil
import subprocess

import pytest

from fixtures.initrd.gen_initrds import raw_cpio
from fixtures.iso.gen_isos import LAYOUTS, build
from helpers.capabilities import require_tools
from helpers.tools import NESTOS_INSTALLER

NI = NESTOS_INSTALLER
CONFIG = b'{"ignition": {"version": "3.0.0"}\n'  # deliberately not valid JSON
# one of each area-finding path: coreiso-era IGNITION.IMG, legacy coreKarg, igninfo (s390x
# cdboot.img offset/length, also with the 0x00 root `..` pycdlib refuses) and the NestOS layout;
# unit tests cover the rest
EMBEDDABLE = ["2020-09", "2021-01", "s390x", "s390x-00", "nestos"]
WITH_KARGS = ["2021-01", "s390x", "s390x-00", "nestos"]


def ni(*args, input=None, ok=True, cwd=None):
    p = subprocess.run(
        [NI, *map(str, args)], input=input, capture_output=True, cwd=cwd, check=False
    )
    if ok and p.returncode != 0:
        raise AssertionError(f"{args} failed: {p.stderr.decode()}")
    if ok is False and p.returncode == 0:
        raise AssertionError(f"{args} unexpectedly succeeded")
    return p


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require_tools("xorriso", "cpio", "xz")
    d = str(tmp_path_factory.mktemp("isos"))
    return {n: build(n, d) for n in LAYOUTS}


@pytest.fixture
def iso(built, tmp_path, request):
    def copy(name):
        dst = tmp_path / f"{name}.iso"
        shutil.copyfile(built[name], dst)
        return dst

    return copy


def three_ways(iso_path, tmp_path, *args, input=None):
    """Run `iso <args>` to stdout, to -o and in place; return the common sha256."""
    streamed = ni("iso", *args, "-o", "-", iso_path, input=input).stdout
    out = tmp_path / "out.iso"
    ni("iso", *args, "-o", out, iso_path, input=input)
    ni("iso", *args, iso_path, input=input)
    h = hashlib.sha256(streamed).hexdigest()
    assert h == sha(out) == sha(iso_path)
    out.unlink()
    return h


@pytest.mark.parametrize("layout", EMBEDDABLE)
def test_ignition_embed_show_remove(iso, tmp_path, layout):
    p = iso(layout)
    orig = sha(p)
    cfg = tmp_path / "c.ign"
    cfg.write_bytes(CONFIG)
    three_ways(p, tmp_path, "ignition", "embed", "-i", cfg)
    assert ni("iso", "ignition", "show", p).stdout == CONFIG
    # independent decode: dd | xzcat | cpio -i --to-stdout
    area = json.loads(ni("dev", "show", "iso", "--ignition", p).stdout)
    with open(p, "rb") as f:
        f.seek(area["offset"])
        raw = f.read(area["length"])
    cpio = lzma.LZMADecompressor().decompress(raw)
    got = subprocess.run(
        ["cpio", "-i", "--to-stdout", "--quiet", "config.ign"],
        input=cpio,
        capture_output=True,
        check=True,
    ).stdout
    assert got == CONFIG
    e = ni("iso", "ignition", "embed", "-i", cfg, p, ok=False)
    assert b"This ISO image already has an embedded Ignition config; use -f to force." in e.stderr
    ni("iso", "ignition", "embed", "-f", p, input=b"{}\n")
    assert ni("iso", "ignition", "show", p).stdout == b"{}\n"
    ni("iso", "ignition", "remove", p)
    assert sha(p) == orig
    assert b"No embedded Ignition config." in ni("iso", "ignition", "show", p, ok=False).stderr


def test_too_large_leaves_iso_untouched(iso):
    p = iso("nestos")
    orig = sha(p)
    e = ni("iso", "ignition", "embed", p, input=os.urandom(262144), ok=False)
    assert b"Compressed initramfs is too large: " in e.stderr and b"> 262144" in e.stderr
    assert sha(p) == orig


def test_xz_bomb_in_ignition_area_is_refused(iso):
    """An xz stream in the 256 KiB area that inflates to 64 MiB: reading stops at 16 MiB."""
    p = iso("nestos")
    area = json.loads(ni("dev", "show", "iso", "--ignition", p).stdout)
    archive = raw_cpio([("config.ign", CONFIG)])
    bomb = lzma.compress(archive + bytes(64 << 20), preset=0, check=lzma.CHECK_CRC32)
    assert len(bomb) < area["length"]
    with open(p, "r+b") as f:
        f.seek(area["offset"])
        f.write(bomb)
    for args in (("iso", "ignition", "show"), ("iso", "network", "extract")):
        e = ni(*args, p, ok=False)
        assert e.returncode == 1 and b"Traceback" not in e.stderr
        assert e.stderr.startswith(b"Error: initrd decompresses to more than 16 MiB")


def test_output_no_clobber_and_tty(iso, tmp_path):
    p = iso("nestos")
    existing = tmp_path / "exists.iso"
    existing.write_bytes(b"keep")
    e = ni("iso", "ignition", "embed", "-o", existing, p, input=CONFIG, ok=False)
    assert (
        b"already exists; remove it or choose another name" in e.stderr
        and existing.read_bytes() == b"keep"
    )
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".nestos-installer-temp")]
    new = tmp_path / "new.iso"
    ni("iso", "ignition", "embed", "-o", new, p, input=CONFIG)
    assert new.stat().st_mode & 0o777 == 0o600  # it carries the config
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [NI, "iso", "ignition", "embed", "-o", "-", str(p)],
            input=CONFIG,
            stdout=slave,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode != 0
    assert b"Refusing to write binary data to terminal" in proc.stderr


def test_deprecated_embed(iso):
    p = iso("nestos")
    e = ni("iso", "embed", p, input=CONFIG)
    assert b"`iso embed` is deprecated; use `iso ignition embed`.  Continuing." in e.stderr
    assert ni("iso", "show", p).stdout == CONFIG
    ni("iso", "remove", p)
    assert b"No embedded Ignition config." in ni("iso", "ignition", "show", p, ok=False).stderr


def test_zeroed_legacy_karg_header_keeps_ignition_working(iso):
    p = iso("2021-01")
    with open(p, "r+b") as f:
        f.seek(32672)
        f.write(bytes(8))
    ni("iso", "ignition", "embed", p, input=CONFIG)
    assert ni("iso", "ignition", "show", p).stdout == CONFIG
    assert b"No karg embed areas found" in ni("iso", "kargs", "show", p, ok=False).stderr


@pytest.mark.parametrize("layout", ["2021-12", "s390x-00", "nestos"])
def test_network_embed_extract_remove(iso, tmp_path, layout):
    p = iso(layout)
    orig = sha(p)
    k1, k2 = tmp_path / "a.nmconnection", tmp_path / "b.nmconnection"
    k1.write_bytes(b"[connection]\nid=a\n")
    k2.write_bytes(b"[connection]\nid=b\n")
    three_ways(p, tmp_path, "network", "embed", "-k", k1, "-k", k2)
    text = ni("iso", "network", "extract", p).stdout
    assert text == (
        b"########## a.nmconnection ##########\n[connection]\nid=a\n\n"
        b"########## b.nmconnection ##########\n[connection]\nid=b\n"
    )
    out = tmp_path / "x"
    listed = ni("iso", "network", "extract", "-C", out, p).stdout.decode().split()
    assert listed == [str(out / "a.nmconnection"), str(out / "b.nmconnection")]
    assert (out / "b.nmconnection").read_bytes() == k2.read_bytes()
    assert (
        b"already exists; remove it or choose another name"
        in ni("iso", "network", "extract", "-C", out, p, ok=False).stderr
    )
    e = ni("iso", "network", "embed", "-k", k1, p, ok=False)
    assert b"This ISO image already has embedded network settings; use -f to force." in e.stderr
    # Ignition and network members are independent
    ni("iso", "ignition", "embed", p, input=CONFIG)
    ni("iso", "network", "remove", p)
    assert ni("iso", "ignition", "show", p).stdout == CONFIG
    assert b"No embedded network settings." in ni("iso", "network", "extract", p, ok=False).stderr
    ni("iso", "ignition", "remove", p)
    assert sha(p) == orig  # area zero-filled again, no empty cpio


def test_network_errors(iso, tmp_path):
    d1, d2 = tmp_path / "1", tmp_path / "2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "x").write_bytes(b"1")
    (d2 / "x").write_bytes(b"2")
    e = ni("iso", "network", "embed", "-k", d1 / "x", "-k", d2 / "x", iso("nestos"), ok=False)
    assert b"multiple input files named 'x'" in e.stderr
    e = ni("iso", "network", "embed", "-k", d1 / "x", iso("2021-09"), ok=False)
    assert b"This OS image does not support customizing network settings." in e.stderr


@pytest.mark.parametrize("layout", WITH_KARGS)
def test_kargs_modify_reset(iso, tmp_path, layout):
    p = iso(layout)
    orig = sha(p)
    default = ni("iso", "kargs", "show", "-d", p).stdout.decode().strip()
    three_ways(p, tmp_path, "kargs", "modify", "-a", "foobar=oldval", "-a", "dodo")
    assert ni("iso", "kargs", "show", p).stdout.decode() == f"{default} foobar=oldval dodo\n"
    ni("iso", "kargs", "modify", "-d", "dodo", "-r", "foobar=oldval=val", p)
    info = json.loads(ni("dev", "show", "iso", "--kargs", p).stdout)
    with open(p, "rb") as f:
        for area in info["kargs"]:
            f.seek(area["offset"])
            raw = f.read(info["length"])
            want = f"{default} foobar=val".encode() + area["end"].encode()
            assert raw == want + area["pad"].encode() * (info["length"] - len(want))
    ni("iso", "kargs", "modify", "-d", "foobar=val", p)
    assert sha(p) == orig
    free = info["length"] - len(default) - 2
    ni("iso", "kargs", "modify", "-a", "x" * free, p)
    e = ni("iso", "kargs", "modify", "-a", "y", p, ok=False)
    assert b"kargs too large for area" in e.stderr
    ni("iso", "kargs", "reset", p)
    assert sha(p) == orig


def test_kargs_unsupported(iso):
    p = iso("2020-09")
    for args in (["show"], ["show", "-d"], ["modify", "-a", "x"], ["reset"]):
        e = ni("iso", "kargs", *args, p, ok=False)
        assert b"No karg embed areas found; old or corrupted NestOS ISO image." in e.stderr


def test_unrecognized_iso(iso, tmp_path):
    p = iso("synthetic")
    for args in (
        ["ignition", "show"],
        ["ignition", "embed", "-i", "/dev/null"],
        ["network", "extract"],
        ["extract", "pxe", "-o", tmp_path],
    ):
        e = ni("iso", *args, p, ok=False)
        assert b"Unrecognized NestOS ISO image." in e.stderr


def test_reset(iso):
    p = iso("nestos")
    orig = sha(p)
    ni("iso", "ignition", "embed", p, input=CONFIG)
    ni("iso", "kargs", "modify", "-a", "x=1", p)
    ni("iso", "reset", p)
    assert sha(p) == orig


@pytest.mark.parametrize("layout", ["nestos", "s390x-00"])
def test_extract_pxe(iso, tmp_path, layout):
    p = iso(layout)
    out = tmp_path / "new" / "pxe"  # created, as upstream does
    names = ni("iso", "extract", "pxe", "-o", out, p).stdout.decode().split()
    assert sorted(os.path.basename(n) for n in names) == [
        f"{layout}-initrd.img",
        f"{layout}-rootfs.img",
        f"{layout}-vmlinuz",
    ]
    assert (out / f"{layout}-rootfs.img").stat().st_size == 50000
    with open(p, "rb") as f:
        data = f.read()
    assert (out / f"{layout}-vmlinuz").read_bytes() in data  # copied out of the image
    assert (
        b"already exists; remove it or choose another name"
        in ni("iso", "extract", "pxe", "-o", out, p, ok=False).stderr
    )
    ni("iso", "extract", "pxe", p, cwd=tmp_path)  # default: the current directory
    assert (tmp_path / f"{layout}-initrd.img").read_bytes() == (
        out / f"{layout}-initrd.img"
    ).read_bytes()


@pytest.mark.parametrize("layout", ["2021-12", "s390x-00", "nestos"])
def test_extract_minimal_iso(iso, tmp_path, layout):
    p = iso(layout)
    prefix = "nestos" if layout == "nestos" else "coreos"
    streamed = ni("iso", "extract", "minimal-iso", p).stdout
    m = tmp_path / "min.iso"
    rootfs = tmp_path / "rootfs.img"
    ni("iso", "extract", "minimal-iso", "--output-rootfs", rootfs, p, m)
    assert hashlib.sha256(streamed).hexdigest() == sha(m)
    pxe = tmp_path / "pxe"
    pxe.mkdir()
    ni("iso", "extract", "pxe", "-o", pxe, p)
    assert rootfs.read_bytes() == (pxe / f"{layout}-rootfs.img").read_bytes()
    kargs = ni("iso", "kargs", "show", m).stdout.decode()
    assert f"{prefix}.liveiso=" not in kargs and "ignition.firstboot" in kargs
    assert ni("iso", "kargs", "show", "-d", m).stdout.decode() == kargs
    assert (
        b"already exists; remove it or choose another name"
        in ni("iso", "extract", "minimal-iso", p, m, ok=False).stderr
    )
    m2 = tmp_path / "min2.iso"
    ni("iso", "extract", "minimal-iso", "--rootfs-url", "https://h/r.img", p, m2)
    shown = ni("iso", "kargs", "show", m2).stdout.decode()
    assert f"{prefix}.live.rootfs_url=https://h/r.img" in shown
    e = ni("iso", "extract", "minimal-iso", "--rootfs-url", "a b", p, tmp_path / "m3", ok=False)
    assert b"forbidden whitespace found in 'a b'" in e.stderr
    ni("iso", "kargs", "modify", "-a", "x", p)
    e = ni("iso", "extract", "minimal-iso", p, tmp_path / "m4", ok=False)
    assert b"Cannot operate on ISO with embedded customizations." in e.stderr
    ni("iso", "reset", p)
    broken = f"{prefix[:3]}z{prefix[4:]}.liveiso".encode()
    data = p.read_bytes().replace(f"{prefix}.liveiso".encode(), broken)
    p.write_bytes(data)
    e = ni("iso", "extract", "minimal-iso", p, tmp_path / "m5", ok=False)
    assert b"wrong final digest: expected " in e.stderr
    assert not (tmp_path / "m5").exists()


def test_minimal_iso_unsupported(iso, tmp_path):
    e = ni("iso", "extract", "minimal-iso", iso("2021-09"), tmp_path / "m", ok=False)
    assert b"This ISO image does not support extracting a minimal ISO." in e.stderr


def _all_commands(group, prefix):
    import click

    for name, cmd in group.commands.items():
        yield [*prefix, name], cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, [*prefix, name])


def test_help_fits_80_columns():
    """Every iso/pxe/dev (sub)command's help, rendered the way the CLI renders it."""
    import click

    from nestos_installer.cli import cli

    assert max(map(len, ni("iso", "customize", "-h").stdout.decode().splitlines())) <= 80
    for name in ("iso", "pxe", "dev"):
        group = cli.commands[name]
        for path, cmd in [([name], group), *_all_commands(group, [name])]:
            with click.Context(cli, info_name="nestos-installer", **cli.context_settings) as c0:
                ctx = c0
                for part in path:
                    ctx = click.Context(ctx.command.commands[part], parent=ctx, info_name=part)
                text = cmd.get_help(ctx)
            assert max(len(line) for line in text.splitlines()) <= 80, path


def test_exit_codes(iso, tmp_path):
    """Run-time refusals exit 1 (as upstream); only usage errors exit 2."""
    p = iso("nestos")
    ni("iso", "ignition", "embed", p, input=CONFIG)
    e = ni("iso", "ignition", "embed", p, input=CONFIG, ok=False)
    assert e.returncode == 1 and b"already has an embedded Ignition config" in e.stderr
    e = ni("iso", "customize", "--dest-device", "/dev/sda", p, ok=False)
    assert e.returncode == 1 and b"This ISO image is already customized" in e.stderr
    ni("iso", "reset", p)
    e = ni("iso", "kargs", "modify", "-a", "x" * 2000, p, ok=False)
    assert e.returncode == 1 and b"kargs too large for area" in e.stderr
    e = ni("iso", "ignition", "embed", p, input=os.urandom(300000), ok=False)
    assert e.returncode == 1 and b"Compressed initramfs is too large" in e.stderr
    bad = tmp_path / "bad.ign"
    bad.write_bytes(b'{"ignition": ')
    e = ni("iso", "customize", "--dest-ignition", bad, p, ok=False)
    assert e.returncode == 1 and f"parsing Ignition config {bad}".encode() in e.stderr
    e = ni("iso", "network", "embed", "-k", bad, iso("2021-09"), ok=False)
    assert e.returncode == 1 and b"does not support customizing network settings" in e.stderr
    e = ni("iso", "extract", "minimal-iso", iso("2021-09"), tmp_path / "m", ok=False)
    assert e.returncode == 1 and b"does not support extracting a minimal ISO" in e.stderr
    # usage errors keep exit 2
    e = ni("iso", "kargs", "modify", "-r", "nonsense", p, ok=False)
    assert e.returncode == 2 and b"Wrong input, format should be: KEY=OLD=NEW" in e.stderr
    e = ni("dev", "show", "iso", "--ignition", "--kargs", p, ok=False)
    assert e.returncode == 2 and b"mutually exclusive" in e.stderr
    assert ni("iso", "kargs", "modify", "--no-such-flag", p, ok=False).returncode == 2


DEEP = b"[" * 100000
GRUB = b'"path": "EFI/openEuler/grub.cfg"'
# every iso/dev command that opens a live ISO
COMMANDS = [
    ["iso", "ignition", "show"],
    ["iso", "ignition", "embed", "-i", "/dev/null", "-o", "-"],
    ["iso", "ignition", "remove", "-o", "-"],
    ["iso", "network", "embed", "-k", "/dev/null", "-o", "-"],
    ["iso", "network", "extract"],
    ["iso", "network", "remove", "-o", "-"],
    ["iso", "kargs", "show"],
    ["iso", "kargs", "modify", "-a", "x", "-o", "-"],
    ["iso", "kargs", "reset", "-o", "-"],
    ["iso", "customize", "--dest-device", "/dev/sda", "-o", "-"],
    ["iso", "reset", "-o", "-"],
    ["iso", "extract", "pxe", "-o", "pxe"],
    ["iso", "extract", "minimal-iso"],  # to stdout
    ["dev", "show", "iso", "--ignition"],
]
# commands that never need the Ignition area (so a bad igninfo.json does not stop them)
NO_IGNINFO = {("kargs", "show"), ("kargs", "modify"), ("kargs", "reset"), ("extract", "pxe")}
HOSTILE = {
    "deep-features": ({"nestos/features.json": DEEP}, COMMANDS),
    "deep-kargs": ({"nestos/kargs.json": DEEP}, COMMANDS),
    "deep-igninfo": ({"nestos/igninfo.json": DEEP}, COMMANDS),
    "surrogate-default": (
        {"nestos/kargs.json": b'{"default": "\\ud800", "files": [], "size": 1139}'},
        [["iso", "kargs", "show"], ["iso", "kargs", "show", "-d"]],
    ),
    "surrogate-pad": (
        {
            "nestos/kargs.json": b'{"default": "a", "size": 1139, "files": [{' + GRUB + b", "
            b'"offset": 0, "pad": "\\udc00"}]}'
        },
        [["iso", "kargs", "show"], ["iso", "kargs", "modify", "-a", "x"]],
    ),
    "igninfo-outside": (
        {
            "nestos/igninfo.json": b'{"file": "images/ignition.img", '
            b'"offset": 262000, "length": 999}'
        },
        [["iso", "ignition", "show"], ["dev", "show", "iso", "--ignition"]],
    ),
    "kargs-outside": (
        {
            "nestos/kargs.json": b'{"default": "a", "size": 1139, "files": [{' + GRUB + b", "
            b'"offset": 18446744073709551615}]}'
        },
        [["iso", "kargs", "show"], ["iso", "ignition", "show"]],
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_one_line_error(tmp_path, case):
    """Hostile metadata in an ISO: a typed error (exit 1), never a traceback."""
    require_tools("xorriso")
    replace, commands = HOSTILE[case]
    p = build("nestos", str(tmp_path), replace=replace)
    for args in commands:
        e = ni(*args, p, ok=None, cwd=tmp_path)
        err = e.stderr.decode()
        if case == "deep-igninfo" and tuple(args[1:3]) in NO_IGNINFO:
            assert e.returncode == 0, (args, err)
            continue
        assert e.returncode == 1, (args, err)
        assert err.startswith("Error: ") and "Traceback" not in err, (args, err)
        assert len(err.splitlines()) <= 5, (args, err)
