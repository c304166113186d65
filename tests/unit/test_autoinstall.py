"""Live autoinstall logic: kernel command line + installer.d -> install argv (installer.md §3.2)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

from helpers.tools import NESTOS_INSTALLER
from nestos_installer import autoinstall
from nestos_installer.autoinstall import Cmdline, OfflineImage, build_invocation
from nestos_installer.errors import UsageError


def argv(
    cmdline: str, files: Sequence[Path] = (), offline: Optional[OfflineImage] = None
) -> List[str]:
    return list(build_invocation(Cmdline.parse(cmdline), list(files), offline).argv)


def test_value_is_last_match_after_first_equals() -> None:
    c = Cmdline.parse("a=1 nestos.inst.stream=x nestos.inst.stream=y=z b\n")
    assert c.value("nestos.inst.stream") == "y=z"
    assert c.value("b") == "b"  # no '=': the whole arg, so it counts as true
    assert c.value("missing") is None
    assert c.value("nestos.inst") is None  # prefix of other names does not match


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("k", True),
        ("k=1", True),
        ("k=yes", True),
        ("k=", False),
        ("k=0", False),
        ("k=no", False),
        ("k=OFF", False),
        ("other=1", False),
    ],
)
def test_flag(arg: str, expected: bool) -> None:
    assert Cmdline.parse(f"console=ttyS0 {arg}").flag("k") is expected


def test_full_order_of_arguments(tmp_path: Path) -> None:
    cfg = tmp_path / "10-a.yaml"
    cfg.write_text("stream: stable\n")
    got = argv(
        "BOOT_IMAGE=/vmlinuz nestos.inst.install_dev=/dev/vda "
        "nestos.inst.ignition_url=http://h/c.ign "
        "ip=dhcp rd.dasd=0.0.0100 nameserver=1.1.1.1 nestos.inst.image_url=http://h/i.raw.xz "
        "nestos.inst.platform_id=qemu nestos.inst.stream=testing nestos.inst.save_partlabel=data* "
        "nestos.inst.save_partindex=5- nestos.inst.insecure nestos.inst.copy_network "
        "iphone=no",
        [cfg],
    )
    assert got == [
        "--config-file",
        str(cfg),
        "/dev/vda",
        "--ignition-url",
        "http://h/c.ign",
        "--insecure-ignition",
        "--append-karg",
        "rd.dasd=0.0.0100",
        "--firstboot-args",
        "rd.neednet=1 ip=dhcp nameserver=1.1.1.1",
        "--copy-network",
        "--image-url",
        "http://h/i.raw.xz",
        "--platform",
        "qemu",
        "--stream",
        "testing",
        "--save-partlabel",
        "data*",
        "--save-partindex",
        "5-",
        "--insecure",
        "--fetch-retries",
        "infinite",
    ]


def test_secure_ipl_is_never_passed_to_install() -> None:
    # `install` has no --secure-ipl: mapping the karg made every such install fail at boot
    plan = build_invocation(
        Cmdline.parse("nestos.inst.install_dev=/dev/vda nestos.inst.secure_ipl"),
        [],
        machine="x86_64",
    )
    assert "--secure-ipl" not in plan.argv
    assert any("secure_ipl ignored" in n and "x86_64" in n for n in plan.notices)
    with pytest.raises(UsageError, match="secure_ipl is not supported"):
        build_invocation(
            Cmdline.parse("nestos.inst.install_dev=/dev/dasda nestos.inst.secure_ipl=1"),
            [],
            machine="s390x",
        )


def test_copy_network_karg_maps_to_the_install_option() -> None:
    assert "--copy-network" in argv("nestos.inst.install_dev=/dev/sda nestos.inst.copy_network=1")
    assert "--copy-network" not in argv(
        "nestos.inst.install_dev=/dev/sda nestos.inst.copy_network=0"
    )


def test_minimal_and_skip_url() -> None:
    got = argv("nestos.inst.install_dev=/dev/sda nestos.inst.ignition_url=skip")
    assert got == ["/dev/sda", "--fetch-retries", "infinite"]


def test_fork_typos_fixed() -> None:
    # the fork forwarded `nrstos.no_persist_ip` and read `coreos.inst.secure_ipl`
    got = argv(
        "nestos.inst.install_dev=/dev/vda nestos.no_persist_ip coreos.inst.secure_ipl=1 "
        "nestos.force_persist_ip"
    )
    assert "--firstboot-args" in got
    assert got[got.index("--firstboot-args") + 1] == (
        "rd.neednet=1 nestos.no_persist_ip nestos.force_persist_ip"
    )
    assert "--secure-ipl" not in got


def test_device_without_dev_prefix_is_deprecated() -> None:
    plan = build_invocation(Cmdline.parse("nestos.inst.install_dev=vda nestos.inst=yes"), [])
    assert plan.argv[0] == "/dev/vda"
    assert any("deprecated" in n and "/dev/vda" in n for n in plan.notices)
    assert any(n.startswith("nestos.inst=yes") for n in plan.notices)


def test_no_device_and_no_config_is_an_error() -> None:
    with pytest.raises(UsageError, match="No install device specified."):
        build_invocation(Cmdline.parse("nestos.inst.ignition_url=http://h/c.ign"), [])


def test_config_only_needs_no_device(tmp_path: Path) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text("dest-device: /dev/vda\n")
    c = Cmdline.parse("console=ttyS0")
    assert autoinstall.should_run(c, [cfg])
    assert not autoinstall.should_run(c, [])
    got = argv("console=ttyS0", [cfg])
    assert got == ["--config-file", str(cfg), "--fetch-retries", "infinite"]


def test_reboot_unless_skip_reboot() -> None:
    dev = "nestos.inst.install_dev=/dev/vda"
    assert build_invocation(Cmdline.parse(dev), []).reboot
    assert build_invocation(Cmdline.parse(f"{dev} nestos.inst.skip_reboot=0"), []).reboot
    assert not build_invocation(Cmdline.parse(f"{dev} nestos.inst.skip_reboot"), []).reboot


def test_config_dir_listing(tmp_path: Path) -> None:
    d = tmp_path / "installer.d"
    assert autoinstall.list_config_dir(d) == []
    d.mkdir()
    for name in ("20-b.yaml", "10-a.yaml", ".hidden"):
        (d / name).write_text("{}\n")
    (d / "sub").mkdir()
    assert autoinstall.list_config_dir(d) == [d / "10-a.yaml", d / "20-b.yaml"]


def _offline(tmp_path: Path) -> Path:
    d = tmp_path / "metal"
    d.mkdir()
    (d / "nestos-metal.raw").write_bytes(b"x")  # no .sig: not eligible
    (d / "nestos-metal.raw.xz").write_bytes(b"x")
    (d / "nestos-metal.raw.xz.sig").write_bytes(b"s")
    (d / "key.asc").write_text("k")
    return d


def test_offline_image_found_and_used_without_source(tmp_path: Path) -> None:
    d = _offline(tmp_path)
    assert autoinstall.find_offline_image([tmp_path / "nope"]) is None
    off = autoinstall.find_offline_image([tmp_path / "nope", d])
    assert off == OfflineImage(d / "nestos-metal.raw.xz", d / "key.asc")
    got = argv("nestos.inst.install_dev=/dev/vda", [], off)
    assert got[-4:] == ["--image-file", str(off.image), "--keyring", str(off.keyring)]
    # a karg source wins over the offline image
    assert "--image-file" not in argv(
        "nestos.inst.install_dev=/dev/vda nestos.inst.image_url=http://h/i", [], off
    )


def test_offline_image_not_used_when_config_names_a_source(tmp_path: Path) -> None:
    off = autoinstall.find_offline_image([_offline(tmp_path)])
    cfg = tmp_path / "a.yaml"
    cfg.write_text("image-url: http://h/i.raw.xz\n")
    assert "--image-file" not in argv("nestos.inst.install_dev=/dev/vda", [cfg], off)
    cfg.write_text("ignition-hash: sha256-00\n")
    assert "--image-file" in argv("nestos.inst.install_dev=/dev/vda", [cfg], off)


def test_command_line_quotes_for_the_console() -> None:
    plan = build_invocation(Cmdline.parse("nestos.inst.install_dev=/dev/vda ip=dhcp"), [])
    line = plan.command_line()
    assert line.startswith("nestos-installer install /dev/vda ")
    assert "'rd.neednet=1 ip=dhcp'" in line


def test_cli_dry_run(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 nestos.inst.install_dev=/dev/vda\n")
    exe = Path(NESTOS_INSTALLER)
    proc = subprocess.run(
        [
            str(exe),
            "autoinstall",
            "--cmdline",
            str(cmdline),
            "--config-dir",
            str(tmp_path / "none"),
            "--offline-dir",
            str(tmp_path / "none"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nestos-installer install /dev/vda --fetch-retries infinite"
    cmdline.write_text("console=ttyS0\n")
    proc = subprocess.run(
        [
            str(exe),
            "autoinstall",
            "--cmdline",
            str(cmdline),
            "--config-dir",
            str(tmp_path / "none"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "nothing to do" in proc.stdout


def test_cli_failed_install_keeps_config_and_says_so(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("nestos.inst.install_dev=/dev/nestos-test-no-such-disk\n")
    conf = tmp_path / "installer.d"
    conf.mkdir()
    (conf / "10-a.yaml").write_text("insecure: true\n")
    exe = Path(NESTOS_INSTALLER)
    proc = subprocess.run(
        [
            str(exe),
            "autoinstall",
            "--cmdline",
            str(cmdline),
            "--config-dir",
            str(conf),
            "--offline-dir",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "INSTALL FAILED" in proc.stderr
    assert "Error: " in proc.stderr
    assert (conf / "10-a.yaml").exists()  # only a successful install removes installer.d
