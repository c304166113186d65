"""The one installer-config schema: derived from `install`'s options, applied alike to
`install -c`, installer.d and `iso|pxe customize --installer-config`, and to command-line
values (install's flags, customize's --dest-* options)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
import yaml

from nestos_installer import autoinstall, config
from nestos_installer.cli.install import install_cmd
from nestos_installer.errors import ConfigError, UsageError
from nestos_installer.live.customize import CustomizeOptions, build, parse_installer_config
from nestos_installer.live.embed import Features

ALL = Features(installer_config=True, directives={"console": True}, live_initrd_network=True)


def test_schema_is_installs_options() -> None:
    params = {str(p.name).replace("_", "-") for p in install_cmd.params}  # options + DEST_DEVICE
    assert params - {"config-file", "plan"} == set(config.ALL_KEYS)
    assert sorted(config.FILE_ORDER) == sorted(config.ALL_KEYS)


@pytest.mark.parametrize(
    "text,why",
    [
        ("secure-ipl: true\n", "unknown key 'secure-ipl'"),
        ("console: bogus\n", "invalid 'console' value"),
        ("append-karg: {a: b}\n", "'append-karg' must be a string"),
        ('append-karg: ["a\\nb"]\n', "invalid 'append-karg' value"),
        ("copy-network: 'yes'\n", "'copy-network' must be true or false"),
        ("fetch-retries: x\n", "invalid 'fetch-retries' value"),
        ("ignition-url: ftp://h/c.ign\n", "invalid 'ignition-url' value"),
        ("save-partindex: [0]\n", "invalid 'save-partindex' value"),
        ("progress: fancy\n", "invalid 'progress' value"),
        ("dest-device: 2020-01-01\n", "'dest-device' must be a string"),
        ("- a\n", "expected a mapping of options"),
        ("a: " + "[" * 100 + "\n", "invalid YAML at line 1 column 68"),
    ],
)
def test_same_refusal_for_install_and_customize(tmp_path: Path, text: str, why: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.parse_file(p)
    assert str(e.value).startswith(f"parsing config file {p}: {why}")
    with pytest.raises(ConfigError) as e:
        parse_installer_config(str(p))
    assert str(e.value).startswith(f"parsing installer config {p}: {why}")
    with pytest.raises(ConfigError):
        build(CustomizeOptions(installer_config=(str(p),)), ALL, "iso")


def test_nestos_keys_are_taken_by_customize(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("ignition-ca: [/etc/pki/ca.pem]\nfirstboot-args: rd.neednet=1 ip=dhcp\n")
    raw, values = parse_installer_config(str(p))
    assert raw == p.read_bytes()
    assert values == {"ignition-ca": ["/etc/pki/ca.pem"], "firstboot-args": "rd.neednet=1 ip=dhcp"}
    res = build(CustomizeOptions(installer_config=(str(p),)), ALL, "iso")
    assert res.installer == values


def test_command_line_values_are_checked_like_file_values() -> None:
    with pytest.raises(UsageError, match="invalid or unsupported console argument: 'bogus'"):
        config.check({"console": ["bogus"]})
    with pytest.raises(UsageError, match="invalid or unsupported console argument: 'bogus'"):
        CustomizeOptions(dest_console=("bogus",))
    with pytest.raises(UsageError, match="contains a control character"):
        CustomizeOptions(dest_karg_append=("a\nb",))
    with pytest.raises(UsageError, match="not valid UTF-8"):
        CustomizeOptions(dest_device="/dev/sd\udcff")
    with pytest.raises(UsageError, match="not valid UTF-8"):
        CustomizeOptions(live_karg_append=("x=\udcff",))
    assert config.check({"console": ("ttyS0,115200n8",), "offline": True}) == {
        "console": ["ttyS0,115200n8"],
        "offline": True,
    }


def _files(res):  # type: ignore[no-untyped-def]
    cfg = json.loads(res.initrd.get("config.ign"))
    out = {}
    for f in cfg.get("storage", {}).get("files", []):
        src = f["contents"]["source"][len("data:;base64,") :]
        out[f["path"]] = gzip.decompress(base64.b64decode(src))
    return out


def test_dest_device_given_twice_is_refused_at_customize_time(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("dest-device: /dev/vdb\n")
    with pytest.raises(UsageError, match="destination device given twice"):
        build(CustomizeOptions(dest_device="/dev/vda", installer_config=(str(p),)), ALL, "iso")


def test_ignition_ca_reaches_the_installer_run(tmp_path: Path) -> None:
    from helpers.httpserver import TlsFiles

    tls = TlsFiles.generate(tmp_path)
    res = build(CustomizeOptions(dest_device="/dev/vda", ignition_ca=(str(tls.ca),)), ALL, "iso")
    files = _files(res)
    assert files["/etc/nestos/installer-ca/0000.pem"] == tls.ca.read_bytes()
    generated = yaml.safe_load(files["/etc/nestos/installer.d/0000-customize.yaml"])
    assert generated == {
        "ignition-ca": ["/etc/nestos/installer-ca/0000.pem"],
        "dest-device": "/dev/vda",
    }
    # the live installer parses what we wrote with the one parser
    cfg = tmp_path / "0000-customize.yaml"
    cfg.write_bytes(files["/etc/nestos/installer.d/0000-customize.yaml"])
    assert config.parse_file(cfg) == generated
    # a CA alone is for the live system's Ignition: it must not start an unattended install
    only = build(CustomizeOptions(ignition_ca=(str(tls.ca),)), ALL, "iso")
    assert not any(p.startswith("/etc/nestos/installer.d") for p in _files(only))


def test_autoinstall_reads_installer_d_with_the_one_parser(tmp_path: Path) -> None:
    good, bad = tmp_path / "10-a.yaml", tmp_path / "20-b.yaml"
    good.write_text("stream: 2403-LTS\n")
    bad.write_text("a: " + "[" * 100000)
    assert autoinstall._config_keys(good) == {"stream": "2403-LTS"}
    assert autoinstall._config_keys(bad) == {}  # install itself reports it
