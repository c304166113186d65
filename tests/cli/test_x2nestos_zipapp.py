"""The self-contained zipapp: built from the tree, run by a bare python3 in isolated mode with
no site-packages at all (-I -S), so nothing from any package index can be picked up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures.hostfacts.hosttree import LOGIN_IGN, build_host
from fixtures.hostfacts.liveartifacts import GpgKey, build_pxe
from fixtures.initrd.gen_initrds import negative_size_cpio
from fixtures.iso import gen_isos
from helpers.capabilities import require, require_tools
from helpers.tools import pyenv_python

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "x2nestos.pyz"
    subprocess.run(
        [sys.executable, str(REPO / "packaging/zipapp/build_pyz.py"), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def python3() -> str:
    return shutil.which("python3") or sys.executable


def installed(version: str) -> list:
    """That CPython (e.g. "3.9") from pyenv or PATH, if this machine has one besides python3."""
    for cand in [pyenv_python(version) or "", shutil.which(f"python{version}") or ""]:
        if cand and "shims" not in cand and Path(cand).is_file() and cand != python3():
            return [cand]
    return []


def interpreters() -> list:
    """python3 plus the oldest supported Python (3.9) wherever this machine has one."""
    return [python3(), *installed("3.9")]


def test_contents_are_stdlib_only(pyz: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names and "x2nestos/cli.py" in names
    assert "nestos_installer/errors.py" in names and "nestos_installer/run.py" in names
    assert not any(n.startswith("nestos_installer/cli") for n in names)  # click lives there
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_help_in_isolated_mode(pyz: Path) -> None:
    for flags in (["-I"], ["-I", "-S"]):
        proc = subprocess.run(
            [python3(), *flags, str(pyz), "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage: x2nestos" in proc.stdout and "convert" in proc.stdout


@pytest.mark.parametrize("interp", interpreters())
def test_doctor_json_on_fake_root(pyz: Path, tmp_path: Path, interp: str) -> None:
    require_tools("cpio")
    build_host(tmp_path / "root")
    build_pxe(tmp_path / "pxe")
    ign = tmp_path / "u.ign"
    ign.write_text(LOGIN_IGN)
    proc = subprocess.run(
        [
            interp,
            "-I",
            "-S",
            str(pyz),
            "--root",
            str(tmp_path / "root"),
            "doctor",
            "--json",
            "--pxe",
            str(tmp_path / "pxe"),
            "-i",
            str(ign),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads(proc.stdout)
    assert d["ok"] and d["target"]["stable-path"] == "/dev/disk/by-id/virtio-x2n-test-disk"
    bad = subprocess.run(
        [
            interp,
            "-I",
            "-S",
            str(pyz),
            "--root",
            str(tmp_path / "root"),
            "convert",
            "--yes",
            "--build-only",
            "--iso",
            str(tmp_path / "no.iso"),
            "-i",
            str(ign),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[0].startswith("Error: artifacts: ISO ")


def test_signature_check_bundled_without_python_gnupg(pyz: Path) -> None:
    """The shared trust policy and the gpgv check ride along; the python-gnupg backends and the
    streaming verifier (and anything importing gnupg) stay out."""
    z = zipfile.ZipFile(pyz)
    names = set(z.namelist())
    assert {"nestos_installer/signature/policy.py", "nestos_installer/signature/gpgv.py"} <= names
    for left_out in ("gpg", "sqv", "verifier", "backend"):
        assert f"nestos_installer/signature/{left_out}.py" not in names
    assert not [n for n in names if n.endswith(".py") and b"import gnupg" in z.read(n)]


def _keyed_pyz(pyz: Path, key: GpgKey, out: Path) -> Path:
    """A copy of the zipapp that ships `key` in nestos_installer/keys/, as a release would."""
    shutil.copyfile(pyz, out)
    with zipfile.ZipFile(out, "a") as z:
        z.writestr("nestos_installer/keys/shipped.asc", key.public.read_bytes())
    return out


def test_shipped_key_inside_the_zipapp_verifies(pyz: Path, tmp_path: Path) -> None:
    """A key shipped in nestos_installer/keys/ is read from inside the zipapp (no --keyring),
    and the bundled gpgv check accepts the PXE files it signed."""
    require_tools("cpio", "gpg", "gpgv")
    build_host(tmp_path / "root")
    files = build_pxe(tmp_path / "pxe")
    signer = GpgKey.generate(tmp_path / "key", "shipped")
    try:
        for p in files.values():
            signer.sign(p)
        keyed = _keyed_pyz(pyz, signer, tmp_path / "keyed.pyz")
        ign = tmp_path / "u.ign"
        ign.write_text(LOGIN_IGN)
        argv = [python3(), "-I", "-S", str(keyed), "--root", str(tmp_path / "root"), "convert"]
        argv += ["--yes", "--build-only", "--pxe", str(tmp_path / "pxe"), "-i", str(ign)]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    finally:
        signer.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("kernel", "initramfs", "rootfs"):
        assert f"{name}: good signature from {signer.fingerprint}" in proc.stdout


CHECK = """
import sys
sys.path.insert(0, sys.argv[3])  # the zipapp, as its own __main__ would see it
from pathlib import Path
from nestos_installer.errors import BadSignature
from nestos_installer.signature.gpgv import GpgvVerifier
from nestos_installer.signature.policy import Keyring
data, sig = Path(sys.argv[1]), Path(sys.argv[2])
ring = Keyring.default(system_dir=None)
print([p.name for p in ring.files])
print(GpgvVerifier(ring.read()).verify(data, sig).fingerprint)
data.write_bytes(data.read_bytes() + b"!")
try:
    GpgvVerifier(ring.read()).verify(data, sig)
except BadSignature as e:
    print(e)
"""


def test_bundled_signature_check_on_python37(pyz: Path, tmp_path: Path) -> None:
    """The shared policy and the gpgv check, as bundled, on the oldest CPython they support."""
    require_tools("gpg", "gpgv")
    old = pyenv_python("3.7")
    require(old is not None, "needs a CPython 3.7 (pyenv's versions folder)")
    signer = GpgKey.generate(tmp_path / "key", "shipped")
    try:
        data = tmp_path / "live.iso"
        data.write_bytes(b"NestOS live" * 1000)
        sig = signer.sign(data)
        keyed = _keyed_pyz(pyz, signer, tmp_path / "keyed.pyz")
        proc = subprocess.run(
            [str(old), "-I", "-S", "-c", CHECK, str(data), str(sig), str(keyed)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        signer.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['shipped.asc']",
        signer.fingerprint,
        "live.iso: bad signature (the data was modified)",
    ]


OLD_HOST = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from nestos_installer.errors import OutputExists
from nestos_installer.outputs import write_file
from nestos_installer.stream import load_stream, select_artifacts
class Transport:
    def get_bytes(self, url, *, max_size=1, what=""):
        assert url == "http://m/s/t.json", url
        art = {"location": "http://m/k?x=1"}
        fmt = {"pxe": {"kernel": art}}
        doc = {"stream": "t", "architectures": {"x86_64": {"artifacts": {"metal": {
            "release": "1", "formats": fmt}}}}}
        return json.dumps(doc).encode()
kernel = select_artifacts(load_stream(Transport(), "t", "http://m/s"), "x86_64", "metal", "pxe")
print(kernel["kernel"].location)
from nestos_stream import Artifact
print(Artifact.from_url(kernel["kernel"].location).signature)
dest = os.path.join(sys.argv[2], "out")
write_file(dest, b"x")
try:
    write_file(dest, b"y")
except OutputExists as e:
    print(e)
"""


def test_shared_modules_run_on_the_oldest_python(pyz: Path, tmp_path: Path) -> None:
    """Stream loading and outputs, as bundled, on Python 3.7 (openEuler 20.03, Debian 10)."""
    interp = pyenv_python("3.7") or shutil.which("python3.7")
    require(interp is not None, "needs a Python 3.7 interpreter")
    proc = subprocess.run(
        [str(interp), "-I", "-S", "-c", OLD_HOST, str(pyz), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "http://m/k?x=1",
        "http://m/k.sig?x=1",
        f"{tmp_path / 'out'} already exists; remove it or choose another name",
    ]


@pytest.mark.parametrize("interp", interpreters())
def test_reads_live_iso_without_pycdlib(pyz: Path, tmp_path: Path, interp: str) -> None:
    """The zipapp reads ISOs with the directory-record reader (no pycdlib, no xorriso at run
    time), including the s390x layout whose root `..` record pycdlib refuses."""
    require_tools("xorriso")
    build_host(tmp_path / "root")
    iso = gen_isos.build("s390x-00", str(tmp_path))
    ign = tmp_path / "u.ign"
    ign.write_text('{"ignition":{"version":"3.3.0"}}')
    proc = subprocess.run(
        [interp, "-I", "-S", str(pyz), "--root", str(tmp_path / "root")]
        + ["doctor", "--json", "--iso", iso, "-i", str(ign)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    art = json.loads(proc.stdout)["artifacts"]
    assert {n: p["size"] for n, p in art["parts"].items()} == {
        "kernel": 30000,
        "initramfs": 40000,
        "rootfs": 50000,
    }
    assert art["generation"] == {"prefix": "coreos", "from": "/COREOS directory of the ISO"}
    assert art["features"] == {"installer-config": True, "live-initrd-network": True}
    assert "ignition.firstboot" in art["live-kargs"]


def bundle_interpreters() -> list:
    """python3 plus the oldest CPython the bundled modules must run on (3.7), if present."""
    return [python3(), *installed("3.7")]


CPIO_ROUND_TRIP = """
import sys
sys.path.insert(0, sys.argv[1])
from nestos_installer import cpio
from nestos_installer.compression import Compression
from nestos_installer.errors import ImageFormatError
from nestos_installer.live.initrd import Initrd
assert cpio.__file__.startswith(sys.argv[1])  # the bundled copy
files = {"a/b": b"1", cpio.decode_name(b"caf\\xe9"): b"22"}
for kind in Compression.stdlib_codecs():
    blob = kind.compress(Initrd(files).to_cpio())
    assert Initrd.from_bytes(blob + bytes(8) + blob).members == files
try:
    cpio.read_archive(bytes.fromhex(sys.argv[2]))
except ImageFormatError as e:
    print(e)
"""


@pytest.mark.parametrize("interp", bundle_interpreters())
def test_bundled_cpio_and_compression_run_on_old_pythons(pyz: Path, interp: str) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    for mod in ("cpio", "compression", "live/initrd"):
        assert f"nestos_installer/{mod}.py" in names
    proc = subprocess.run(
        [interp, "-I", "-S", "-c", CPIO_ROUND_TRIP, str(pyz), negative_size_cpio().hex()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "bad cpio header at offset 0: fields must be 8 hex digits\n"


# Every CPython a host may ship: >= 3.7 runs the zipapp; older ones get the one-line refusal.
RUNS_ON = ("3.7", "3.8", "3.9", "3.10")
REFUSED_ON = ("2.7", "3.6")


def pyenv_or_skip(version: str) -> str:
    """That CPython from pyenv's versions folder (a capability probe: CI has them all)."""
    interp = pyenv_python(version)
    require(interp is not None, f"needs CPython {version} in pyenv's versions folder")
    assert interp is not None
    return interp


def isolated(interp: str, version: str) -> list:
    """No user site, no environment, no site-packages: only the zipapp and the stdlib."""
    return [interp, "-E", "-s", "-S"] if version.startswith("2.") else [interp, "-I", "-S"]


@pytest.mark.parametrize("version", RUNS_ON)
def test_doctor_json_on_each_supported_python(pyz: Path, tmp_path: Path, version: str) -> None:
    """doctor --json and plan --json on a fake host tree, under each Python >= 3.7 (the bundled
    code: disks, network readers, payload with its gzip data URLs, ISO/PXE readers)."""
    interp = pyenv_or_skip(version)
    require_tools("cpio")
    build_host(tmp_path / "root")
    build_pxe(tmp_path / "pxe")
    ign = tmp_path / "u.ign"
    ign.write_text(LOGIN_IGN)
    out = {}
    for verb in ("doctor", "plan"):
        proc = subprocess.run(
            [*isolated(interp, version), str(pyz), "--root", str(tmp_path / "root"), verb]
            + ["--json", "--pxe", str(tmp_path / "pxe"), "-i", str(ign), "--carry", "all"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stderr == ""
        out[verb] = json.loads(proc.stdout)
    assert out["doctor"]["ok"] and out["doctor"]["architecture"] == "x86_64"
    assert out["doctor"]["target"]["stable-path"] == "/dev/disk/by-id/virtio-x2n-test-disk"
    dest = out["plan"]["destination-ignition"]
    assert {u["name"] for u in dest["passwd"]["users"]} == {"root", "alice", "carol"}
    assert out["plan"]["installer-config"]["dest-device"].endswith("virtio-x2n-test-disk")


@pytest.mark.parametrize("version", REFUSED_ON)
def test_old_python_gets_one_line(pyz: Path, tmp_path: Path, version: str) -> None:
    """Python 2.7 and 3.6 cannot parse x2nestos: the entry point says, in one line, which
    Python it needs and that --host from another machine needs none here; exit status 2."""
    interp = pyenv_or_skip(version)
    for args in (["doctor", "--json"], ["--help"], []):
        proc = subprocess.run(
            [*isolated(interp, version), str(pyz), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"Python is {version}" in lines[0]
        assert "needs Python >= 3.7" in lines[0] and "--host" in lines[0]
        assert "Traceback" not in proc.stderr and "SyntaxError" not in proc.stderr
