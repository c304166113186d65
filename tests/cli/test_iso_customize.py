"""Black-box `nestos-installer iso customize` tests: outputs, gating, errors, live kargs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.tools import NESTOS_INSTALLER

NI = NESTOS_INSTALLER


def ni(*args, input=None, ok=True):
    p = subprocess.run([NI, *map(str, args)], input=input, capture_output=True, check=False)
    assert (p.returncode == 0) == ok, (args, p.stderr.decode())
    return p


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require_tools("xorriso")
    d = str(tmp_path_factory.mktemp("isos"))
    return {n: build(n, d) for n in ("nestos", "s390x-00", "2021-09", "2020-09", "synthetic")}


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "dest.ign").write_bytes(b'{"ignition": {"version": "3.2.0"}}\n')
    (tmp_path / "eth0.nmconnection").write_bytes(b"[connection]\nid=eth0\n")
    return tmp_path


@pytest.mark.parametrize("layout", ["nestos", "s390x-00"])
def test_customize_outputs_identical(built, inputs, tmp_path, layout):
    p = tmp_path / "in.iso"
    shutil.copyfile(built[layout], p)
    orig = sha(p)
    args = [
        "iso",
        "customize",
        "--dest-device",
        "/dev/sda",
        "--dest-ignition",
        inputs / "dest.ign",
        "--network-keyfile",
        inputs / "eth0.nmconnection",
        "--live-karg-append",
        "live.karg=1",
    ]
    streamed = ni(*args, "-o", "-", p).stdout
    e = ni(*args, "-o", tmp_path / "out.iso", p)
    assert b"Boot media will automatically install to /dev/sda without confirmation." in e.stderr
    ni(*args, p)
    assert hashlib.sha256(streamed).hexdigest() == sha(tmp_path / "out.iso") == sha(p) != orig
    cfg = json.loads(ni("iso", "ignition", "show", p).stdout)
    assert [f["path"] for f in cfg["storage"]["files"]] == [
        "/etc/nestos/dest.ign",
        "/etc/nestos/installer.d/0000-customize.yaml",
    ]
    assert ni("iso", "kargs", "show", p).stdout.decode().endswith(" live.karg=1\n")
    assert b"eth0.nmconnection" in ni("iso", "network", "extract", p).stdout
    e = ni(*args, p, ok=False)
    assert b"This ISO image is already customized; use -f to force." in e.stderr
    assert e.returncode == 1  # a run-time refusal, not a usage error
    assert (
        b"already exists; remove it or choose another name"
        in ni(*args, "-f", "-o", tmp_path / "out.iso", p, ok=False).stderr
    )
    ni("iso", "customize", "-f", p)  # nothing requested: empties the area, keeps kargs
    assert b"No embedded Ignition config." in ni("iso", "ignition", "show", p, ok=False).stderr
    ni("iso", "reset", p)
    assert sha(p) == orig


def test_live_kargs_only_embeds_no_config(built, tmp_path):
    p = tmp_path / "in.iso"
    shutil.copyfile(built["nestos"], p)
    default = ni("iso", "kargs", "show", "-d", p).stdout.decode().strip()
    ni(
        "iso",
        "customize",
        "--live-karg-delete",
        "console=tty1",
        "--live-karg-replace",
        "mitigations=auto,nosmt=off",
        p,
    )
    assert ni("iso", "kargs", "show", p).stdout.decode().strip() == default.replace(
        " console=tty1", ""
    ).replace("auto,nosmt", "off")
    assert b"No embedded Ignition config." in ni("iso", "ignition", "show", p, ok=False).stderr


def test_customize_errors(built, inputs, tmp_path):
    old = tmp_path / "old.iso"
    shutil.copyfile(built["2021-09"], old)
    orig = sha(old)
    e = ni("iso", "customize", "--network-keyfile", inputs / "eth0.nmconnection", old, ok=False)
    assert b"This OS image does not support customizing network settings." in e.stderr
    e = ni("iso", "customize", "--dest-device", "/dev/sda", old, ok=False)
    assert b"This OS image does not support customizing installer configuration." in e.stderr
    e = ni("iso", "customize", "--live-karg-append", "x", built["2020-09"], "-o", "-", ok=False)
    assert b"This OS image does not support customizing live kernel arguments." in e.stderr
    e = ni("iso", "customize", "--dest-device", "/dev/sda", built["synthetic"], "-o", "-", ok=False)
    assert b"Unrecognized NestOS ISO image." in e.stderr
    bad = inputs / "bad.ign"
    bad.write_bytes(b'{"ignition": {"version": "2.2.0"}}')
    p = tmp_path / "n.iso"
    shutil.copyfile(built["nestos"], p)
    n_orig = sha(p)
    e = ni("iso", "customize", "--dest-ignition", bad, p, ok=False)
    assert f"parsing Ignition config {bad}".encode() in e.stderr
    assert b"unsupported config version" in e.stderr and e.returncode == 1
    bad.write_bytes(b"[" * 100000)  # too deep for json: still one typed error
    e = ni("iso", "customize", "--live-ignition", bad, p, ok=False)
    assert e.returncode == 1 and e.stderr.startswith(b"Error: parsing Ignition config ")
    pem = inputs / "bad.pem"
    pem.write_bytes(b"not a certificate\n")
    e = ni("iso", "customize", "--ignition-ca", pem, p, ok=False)
    assert b"CA certificate" in e.stderr
    e = ni("iso", "customize", "--live-karg-replace", "nonsense", p, ok=False)
    assert b"Wrong input, format should be: KEY=OLD=NEW" in e.stderr
    script = inputs / "eth0.nmconnection"
    e = ni(
        "iso",
        "customize",
        "--dest-console",
        "ttyS0",
        "--pre-install",
        script,
        "--pre-install",
        script,
        p,
        ok=False,
    )
    assert b"config already specifies path /usr/local/bin/pre-install-eth0.nmconnection" in e.stderr
    assert sha(p) == n_orig and sha(old) == orig
