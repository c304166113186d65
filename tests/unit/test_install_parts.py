"""Pure parts of `install` on real files and directories: BLS/console editing, config-file
merging, partition filters, Ignition validation (with ignition-validate as the oracle), the
image writer on a sparse file, and the docs listing every install option as a config key."""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.capabilities import require_tools
from nestos_installer import bootconfig, config, gpt, ignition, writer
from nestos_installer.errors import ConfigError, ImageFormatError, TargetError, UsageError
from nestos_installer.install import InstallConfig, describe
from nestos_installer.pipeline.decompress import decompressed
from nestos_installer.pipeline.readers import BytesReader

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def make_boot(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    (boot / "loader" / "entries").mkdir(parents=True)
    (boot / "loader" / "entries" / "ostree-1-nestos.conf").write_text(
        "title NestOS\nversion 1  \noptions root=LABEL=root rw console=ttyS0,115200n8 "
        "ignition.platform.id=metal $ignition_firstboot\nlinux /vmlinuz\n"
    )
    (boot / "loader" / "entries" / "ostree-0-old.conf").write_text("options old\n")
    (boot / "grub2").mkdir()
    (boot / "grub2" / "grub.cfg").write_text(
        "set a=1\n# CONSOLE-SETTINGS-START\nserial --speed=115200\n# CONSOLE-SETTINGS-END\nb\n"
    )
    (boot / "nestos").mkdir()
    (boot / "nestos" / "platforms.json").write_text(
        json.dumps(
            {
                "metal": {
                    "grub_commands": ["serial --speed=115200"],
                    "kernel_arguments": ["console=ttyS0,115200n8"],
                },
                "openstack": {
                    "grub_commands": ["terminal_output console"],
                    "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"],
                },
            }
        )
    )
    (boot / "ignition.firstboot").write_text("")
    return boot


def test_console_grammar():
    assert str(bootconfig.Console.parse("ttyS1")) == "ttyS1,9600n8"
    assert str(bootconfig.Console.parse("ttyAMA0,115200e7")) == "ttyAMA0,115200e7"
    assert str(bootconfig.Console.parse("tty0")) == "tty0"
    c = bootconfig.Console.parse("ttyS0,115200o")
    assert c.grub_command() == "serial --unit=0 --speed=115200 --word=8 --parity=odd"
    for bad in ("ttyS", "ttyS0,", "ttyS0,abc", "ttyS0,9600x8", "tty1", "ttyUSB0"):
        with pytest.raises(UsageError):
            bootconfig.Console.parse(bad)
    with pytest.raises(UsageError, match='should not start with "/dev/"'):
        bootconfig.Console.parse("/dev/ttyS0")


def test_bls_edits_platform_console_firstboot(tmp_path):
    boot = make_boot(tmp_path)
    said = []
    edits = bootconfig.BootEdits(
        platform="openstack", append=("a=1", "b"), delete=("rw",), firstboot_args="ip=dhcp"
    )
    bootconfig.apply(boot, edits, said.append)
    entry = (boot / "loader" / "entries" / "ostree-1-nestos.conf").read_text()
    assert entry.splitlines()[1] == "version 1"  # trailing whitespace stripped
    opts = entry.splitlines()[2]
    assert opts == (
        "options root=LABEL=root ignition.platform.id=openstack $ignition_firstboot "
        "console=tty0 console=ttyS0,115200n8 a=1 b"
    )
    assert (boot / "loader" / "entries" / "ostree-0-old.conf").read_text() == "options old\n"
    assert (boot / "grub2" / "grub.cfg").read_text() == (
        "set a=1\n# CONSOLE-SETTINGS-START\nterminal_output console\n# CONSOLE-SETTINGS-END\nb\n"
    )
    assert (boot / "ignition.firstboot").read_text() == 'set ignition_network_kcmdline="ip=dhcp"\n'
    assert said == [
        "Setting platform to openstack",
        "Modifying kernel arguments",
        "Writing first-boot kernel arguments",
    ]


def test_bls_errors(tmp_path):
    boot = make_boot(tmp_path)
    (boot / "grub2" / "grub.cfg").write_text("no markers\n")
    with pytest.raises(TargetError, match="missing substitution marker"):
        bootconfig.apply(
            boot, bootconfig.BootEdits(consoles=(bootconfig.Console.parse("tty0"),)), lambda m: None
        )
    entry = boot / "loader" / "entries" / "ostree-1-nestos.conf"
    entry.write_text("options a\noptions b\n")
    with pytest.raises(TargetError, match="Multiple 'options' lines"):
        bootconfig.apply(boot, bootconfig.BootEdits(append=("x",)), lambda m: None)
    for e in (boot / "loader" / "entries").glob("*"):
        e.unlink()
    with pytest.raises(TargetError, match="Found no BLS entries"):
        bootconfig.apply(boot, bootconfig.BootEdits(append=("x",)), lambda m: None)


def test_config_merge_rules(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(
        "dest-device: /dev/sda\nappend-karg: [x]\nplatform: aws\nfetch-retries: 3\n"
        "copy-network: true\n"
    )
    b = tmp_path / "b.yaml"
    b.write_text("append-karg: y\nplatform: qemu\n")
    merged = config.merge(
        [("a", config.parse_file(a)), ("b", config.parse_file(b)), ("cli", {"append-karg": ["z"]})]
    )
    assert merged["append-karg"] == ["x", "y", "z"]
    assert merged["platform"] == "qemu" and merged["fetch-retries"] == "3"
    assert merged["copy-network"] is True
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config.parse_file(empty) == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("copy-network: maybe\n")
    with pytest.raises(ConfigError, match="must be true or false"):
        config.parse_file(bad)
    with pytest.raises(UsageError, match="given twice"):
        config.merge([("a", {"dest-device": "/dev/a"}), ("b", {"dest-device": "/dev/b"})])


def test_partition_filters_and_renumbering():
    f = gpt.PartitionFilter.parse(["data*,boot"], ["5-", "2"])
    assert f.matches(7, "x") and f.matches(2, "x") and f.matches(1, "data-1")
    assert not f.matches(3, "root") and not f.matches(1, "Data")
    with pytest.raises(UsageError, match="couldn't parse label glob"):
        gpt.PartitionFilter.parse(["***"], [])
    e = [gpt.PartitionEntry(i, 100 * i, 10, "t", f"u{i}") for i in (4, 5, 7)]
    moved = gpt.renumber([1, 2, 4], e)
    assert [(new, old.index) for new, old in moved] == [(5, 4), (6, 5), (7, 7)]


def test_plan_text_in_user_terms(tmp_path: Path) -> None:
    """`install --plan` names saved partitions as the user gave them, never Python reprs."""
    dev = tmp_path / "disk.img"
    dev.write_bytes(b"\0" * 4096)
    cfg = InstallConfig(
        dest_device=str(dev),
        image_file=Path("/srv/nestos.raw.xz"),
        append_karg=("x=1",),
        save=gpt.PartitionFilter.parse(["data*,boot"], ["2-", "5", "-3", "7-9"]),
    )
    text = describe(cfg)
    assert text.splitlines()[0] == "Install plan (nothing will be written):"
    assert f"  target:      {dev} ({dev} is not a block device)" in text
    assert "  source:      file /srv/nestos.raw.xz (signature /srv/nestos.raw.xz.sig)" in text
    assert "  append karg: x=1" in text
    assert (
        "  save:        partitions labelled data*, boot, partitions 2-, partition 5, "
        "partitions -3, partitions 7-9"
    ) in text
    assert "    (could not read partition table:" in text
    assert "None" not in text and "[" not in text
    assert str(gpt.PartitionFilter()) == "nothing"


def test_sector_size_detection():
    head = bytearray(MIB)
    assert gpt.image_sector_size(bytes(head)) is None
    head[4096:4104] = b"EFI PART"
    assert gpt.image_sector_size(bytes(head)) == 4096
    with pytest.raises(ImageFormatError, match="source has sector size 4096"):
        gpt.check_sector_size(bytes(head), 512)


CASES = {
    "valid-3.3": b'{"ignition":{"version":"3.3.0"}}',
    "valid-3.0": b'{"ignition":{"version":"3.0.0"},"passwd":{}}',
    "truncated": b'{"ignition":{"version":"3.3.0"}',
    "empty-object": b"{}",
    "spec-2": b'{"ignition":{"version":"2.2.0"}}',
    "array": b"[]",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ignition_validation_agrees_with_ignition_validate(name, tmp_path):
    require_tools("ignition-validate")
    path = tmp_path / "c.ign"
    path.write_bytes(CASES[name])
    oracle = subprocess.run(
        ["ignition-validate", str(path)], check=False, capture_output=True
    ).returncode
    try:
        ignition.validate(CASES[name], str(path))
        ours = 0
    except ConfigError:
        ours = 1
    assert ours == (0 if oracle == 0 else 1)


def test_ignition_write_modes(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    ignition.write_config(boot, b'{"ignition":{"version":"3.3.0"}}\n', None)
    assert (boot / "ignition").stat().st_mode & 0o777 == 0o700
    assert (boot / "ignition" / "config.ign").stat().st_mode & 0o777 == 0o600
    with pytest.raises(TargetError, match="already exists"):
        ignition.write_config(boot, b"{}", None)


class FileTarget:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def pwrite(self, data: bytes, offset: int) -> None:
        os.pwrite(self.fd, data, offset)


def test_writer_holds_back_first_mib(tmp_path):
    image = bytearray(os.urandom(3 * MIB + 123))
    image[512:520] = b"EFI PART"
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xff" * 4 * MIB)
    t = FileTarget(disk)
    with decompressed(BytesReader(lzma.compress(bytes(image)))) as r:
        head = writer.stream_image(r, t, limit=4 * MIB, sector_size=512)
    data = disk.read_bytes()
    assert head == image[:MIB]
    assert data[:MIB] == b"\xff" * MIB  # not written yet
    assert data[MIB : len(image)] == image[MIB:]
    writer.commit_head(t, head)
    assert disk.read_bytes()[: len(image)] == image


def test_writer_stops_at_the_limit(tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(2 * MIB))
    with pytest.raises(TargetError, match="larger than"):
        with decompressed(BytesReader(bytes(3 * MIB))) as r:
            writer.stream_image(r, FileTarget(disk), limit=2 * MIB, sector_size=512)


def test_every_install_option_is_a_documented_config_key():
    out = subprocess.run(
        [sys.executable, "-m", "nestos_installer", "install", "-h"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    options = set(re.findall(r"--([a-z][a-z0-9-]+)", out)) - {
        "help",
        "config-file",
        "plan",
        "ignition",
    }
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Config file format", 1)[1].split("\n## ", 1)[0]
    keys = set(re.findall(r"^([a-z][a-z0-9-]+):", section, re.M))
    assert options - keys == set()
    assert keys <= set(config.ALL_KEYS)
    assert "config-file" in section and "plan" in section


def test_help_lines_fit_80_columns():
    def walk(args):  # type: ignore[no-untyped-def]
        out = subprocess.run(
            [sys.executable, "-m", "nestos_installer", *args, "-h"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        too_long = [ln for ln in out.splitlines() if len(ln) > 80]
        assert not too_long, (args, too_long)
        return out

    top = walk([])
    commands = re.findall(r"^  ([a-z-]+)  ", top.split("Commands:", 1)[1], re.M)
    assert {"install", "download", "list-stream", "iso", "pxe"} <= set(commands)
    for c in commands:
        walk([c])


def test_zero_runs_split_whole_zero_mibs_from_data() -> None:
    import mmap

    MIB = writer.MIB
    buf = mmap.mmap(-1, 4 * MIB)
    buf[0:10] = b"x" * 10  # MiB 0: data at its start
    buf[3 * MIB - 1] = 1  # MiB 2: one byte at its very end
    # MiB 1 and 3: all zeros
    assert writer._zero_runs(buf, 4 * MIB) == [
        (False, 0, MIB),
        (True, MIB, 2 * MIB),
        (False, 2 * MIB, 3 * MIB),
        (True, 3 * MIB, 4 * MIB),
    ]
    buf[:] = bytes(4 * MIB)
    assert writer._zero_runs(buf, 4 * MIB) == [(True, 0, 4 * MIB)]  # adjacent runs merge
    # a short tail is always written, even if zero
    assert writer._zero_runs(buf, 2 * MIB + 512) == [
        (True, 0, 2 * MIB),
        (False, 2 * MIB, 2 * MIB + 512),
    ]


class _ZeroingFile:
    """A regular-file target that also offers zero_range, as a disk does (BLKZEROOUT)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.zeroed: list = []

    def pwrite(self, data: bytes, offset: int) -> None:
        os.pwrite(self.fd, data, offset)

    def zero_range(self, offset: int, length: int) -> bool:
        self.zeroed.append((offset, length))
        os.pwrite(self.fd, bytes(length), offset)  # what the disk would do
        return True


def test_stream_image_zeroes_whole_zero_mibs_through_the_target(tmp_path: Path) -> None:
    MIB = writer.MIB
    image = os.urandom(MIB) + bytes(3 * MIB) + os.urandom(MIB) + bytes(5 * MIB) + b"tail"
    target = _ZeroingFile(tmp_path / "disk")
    try:
        head = writer.stream_image(
            BytesReader(image, chunk=777_777), target, limit=64 * MIB, sector_size=512
        )
    finally:
        os.close(target.fd)
    assert head == image[:MIB]
    assert (tmp_path / "disk").read_bytes()[MIB:] == image[MIB:]
    assert sum(n for _off, n in target.zeroed) == 8 * MIB  # every whole zero MiB
    for off, n in target.zeroed:
        assert image[off : off + n] == bytes(n)
