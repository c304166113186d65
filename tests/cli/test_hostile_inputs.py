"""Every `nestos-installer` command that reads a file, run on hostile files: truncated, garbage,
offsets past EOF, huge sizes, `..` and absolute names, symlinks, non-UTF-8, /dev/zero, FIFOs,
directories, deep nesting; stream metadata from a local server that lies.

Each run has a timeout and must: exit non-zero (and not 70, the internal-error code), print
exactly one `Error:` line (plus `Caused by:`/`hint:`/click usage lines), no traceback, no
"internal error", and write nothing but its named output (a listing of its directory, with file
digests, is compared before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

from fixtures.initrd.gen_initrds import compress, gnu_cpio, raw_cpio
from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from helpers.httpserver import TestServer, TlsFiles
from helpers.refusal import TIMEOUT, check_refusal, run
from helpers.tools import NESTOS_INSTALLER, package_dir

LIVE_FEATURES = {"installer-config": True, "live-initrd-network": True}


# ---- inputs ------------------------------------------------------------------------------------
def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, (old, new)
    return data.replace(old, new)


def _kargs_offset_past_eof(iso: bytes) -> bytes:
    # kargs.json's first area offset becomes 9999999 (past the end of the 800 KiB image)
    return _patch(iso, b'"offset": 73\n    }', b'"offset": 9999999}')


def _kargs_huge_size(iso: bytes) -> bytes:
    return _patch(iso, b'"size": 1139', b'"size": 9999')


def _kargs_surrogate(iso: bytes) -> bytes:
    return _patch(iso, b'"default": "mitiga', b'"default": "\\ud800')


def _igninfo_absolute(iso: bytes) -> bytes:
    return _patch(iso, b'{"file": "images/ignition.img"}', b'{"file": "/etc/passwd"}        ')


def _negative_cpio() -> bytes:
    """newc entry whose c_filesize is `-00000E4`: int(x, 16) takes the sign, the parse goes back."""
    good = raw_cpio([("a", b"x" * 300)])
    field = b"%08X" % 300
    return good.replace(field, b"-00000E4", 1) * 2


Maker = Callable[[Path, Dict[str, Path]], Path]


def _file(name: str, data: bytes) -> Maker:
    def make(d: Path, base: Dict[str, Path]) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _from_base(role: str, name: str, edit: Callable[[bytes], bytes]) -> Maker:
    def make(d: Path, base: Dict[str, Path]) -> Path:
        (d / name).write_bytes(edit(base[role].read_bytes()))
        return d / name

    return make


def _fifo(d: Path, base: Dict[str, Path]) -> Path:
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _directory(d: Path, base: Dict[str, Path]) -> Path:
    (d / "dir.in").mkdir()
    return d / "dir.in"


def _zero(d: Path, base: Dict[str, Path]) -> Path:
    return Path("/dev/zero")


def _symlink_zero(d: Path, base: Dict[str, Path]) -> Path:
    os.symlink("/dev/zero", d / "link.in")
    return d / "link.in"


def _nonutf8_name(role: str) -> Maker:
    def make(d: Path, base: Dict[str, Path]) -> Path:
        p = d / os.fsdecode(b"in-\xff")
        shutil.copyfile(base[role], p)
        return p

    return make


KINDS: Dict[str, Maker] = {
    "iso-truncated": _from_base("iso", "t.iso", lambda b: b[: 64 << 10]),
    "iso-truncated-late": _from_base("iso", "t.iso", lambda b: b[: len(b) // 2]),
    "iso-garbage": _file("g.iso", bytes(range(256)) * 3200),
    "iso-empty": _file("e.iso", b""),
    "iso-kargs-past-eof": _from_base("iso", "k.iso", _kargs_offset_past_eof),
    "iso-kargs-huge-size": _from_base("iso", "k.iso", _kargs_huge_size),
    "iso-kargs-surrogate": _from_base("iso", "k.iso", _kargs_surrogate),
    "iso-igninfo-absolute": _from_base("iso", "i.iso", _igninfo_absolute),
    "initrd-truncated": _from_base("initrd", "t.img", lambda b: b[: len(b) // 2]),
    "initrd-garbage": _file("g.img", b"\x1f\x8b\x08" + bytes(range(256)) * 64),
    "initrd-dotdot": _file("d.img", compress("xz", raw_cpio([("../evil", b"x\n")]))),
    "initrd-absolute": _file("a.img", compress("xz", raw_cpio([("/tmp/evil", b"x\n")]))),
    "initrd-negative-size": _file("n.img", _negative_cpio()),
    "json-truncated": _file("t.ign", b'{"ignition": {"version": "3.4'),
    "json-deep": _file("d.ign", b"[" * 100000),
    "json-not-utf8": _file("u.ign", b'{"ignition": {"version": "3.4.0"}, "x": "\xff"}'),
    "yaml-deep": _file("d.yaml", b"append-karg: " + b"[" * 60000),
    "yaml-not-utf8": _file("u.yaml", b"dest-device: /dev/\xff\n"),
    "yaml-truncated": _file("t.yaml", b"append-karg: [a, b"),
    "yaml-secure-ipl": _file("s.yaml", b"secure-ipl: true\n"),
    "yaml-bad-console": _file("c.yaml", b"console: [bogus]\n"),
    "yaml-bad-int": _file("i.yaml", b"fetch-retries: !!int 0x\n"),
    "pem-garbage": _file(
        "g.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    ),
    "name-not-utf8": _nonutf8_name("keyfile"),
    "zero": _zero,
    "fifo": _fifo,
    "directory": _directory,
    "symlink-to-zero": _symlink_zero,
}

GENERIC = ("zero", "directory")


# ---- commands ----------------------------------------------------------------------------------
# (id, argv; {in} is the hostile input, {iso}/{initrd}/{ign}/{keyfile} good copies, {out} and
# {outdir} the named outputs, which do not exist yet), and the kinds each runs on. Every ISO
# command parses the image its own way (truncated, garbage); they share how it is opened
# (/dev/zero, a directory, a FIFO), so a few of them stand for all there.
ISO_KINDS = ("iso-truncated", "iso-garbage")
ISO_COMMANDS: List[Tuple[str, str, Tuple[str, ...]]] = [
    ("iso-ignition-embed", "iso ignition embed -i {ign} -o {out} {in}", ISO_KINDS),
    ("iso-ignition-show", "iso ignition show {in}", (*ISO_KINDS, *GENERIC, "fifo", "iso-empty")),
    ("iso-ignition-remove-inplace", "iso ignition remove {in}", ISO_KINDS),
    ("iso-network-embed", "iso network embed -k {keyfile} -o {out} {in}", ISO_KINDS),
    ("iso-network-extract", "iso network extract -C {outdir} {in}", ISO_KINDS),
    ("iso-network-remove", "iso network remove -o {out} {in}", ISO_KINDS),
    ("iso-kargs-modify", "iso kargs modify -a x=1 -o {out} {in}", ISO_KINDS),
    ("iso-kargs-reset", "iso kargs reset -o {out} {in}", ISO_KINDS),
    ("iso-kargs-show", "iso kargs show {in}", (*ISO_KINDS, "fifo")),
    ("iso-customize", "iso customize --dest-device /dev/vda -o {out} {in}", (*ISO_KINDS, "zero")),
    ("iso-reset", "iso reset -o {out} {in}", ISO_KINDS),
    ("iso-extract-pxe", "iso extract pxe -o {outdir} {in}", ISO_KINDS),
    ("iso-extract-minimal", "iso extract minimal-iso {in} {out}", ISO_KINDS),
    ("dev-show-iso", "dev show iso {in}", (*ISO_KINDS, "fifo", "symlink-to-zero")),
    ("iso-kargs-show", "iso kargs show {in}", ("iso-kargs-past-eof", "iso-kargs-huge-size")),
    ("iso-kargs-show-surrogate", "iso kargs show {in}", ("iso-kargs-surrogate",)),
    ("iso-kargs-modify", "iso kargs modify -a x=1 -o {out} {in}", ("iso-kargs-past-eof",)),
    ("iso-kargs-reset", "iso kargs reset -o {out} {in}", ("iso-kargs-huge-size",)),
    ("iso-ignition-embed", "iso ignition embed -i {ign} -o {out} {in}", ("iso-truncated-late",)),
    ("iso-ignition-show", "iso ignition show {in}", ("iso-igninfo-absolute",)),
    (
        "iso-customize-live-karg",
        "iso customize --live-karg-append a=1 -o {out} {in}",
        ("iso-kargs-past-eof",),
    ),
]
INITRD_KINDS = ("initrd-truncated", "initrd-garbage")
INITRD_COMMANDS = [
    (
        "pxe-ignition-unwrap",
        "pxe ignition unwrap {in}",
        (
            *INITRD_KINDS,
            "zero",
            "initrd-negative-size",
        ),
    ),
    ("pxe-network-unwrap", "pxe network unwrap -C {outdir} {in}", INITRD_KINDS),
    ("dev-show-initrd", "dev show initrd {in}", (*INITRD_KINDS, *GENERIC, "fifo")),
    (
        "dev-extract-initrd",
        "dev extract initrd -C {outdir} {in}",
        (
            *INITRD_KINDS,
            "initrd-dotdot",
            "initrd-absolute",
        ),
    ),
    (
        "pxe-customize",
        "pxe customize --dest-device /dev/vda -o {out} {in}",
        (
            *INITRD_KINDS,
            *GENERIC,
            "fifo",
        ),
    ),
]
IGN_KINDS = ("json-truncated", "json-deep", "json-not-utf8", "fifo", *GENERIC)
CFG_KINDS = (
    "yaml-deep",
    "yaml-not-utf8",
    "yaml-truncated",
    "yaml-secure-ipl",
    "yaml-bad-console",
    "yaml-bad-int",
    *GENERIC,
)
CA_KINDS = ("pem-garbage", "fifo", *GENERIC)
NAME_KINDS = ("name-not-utf8", *GENERIC)
INPUT_COMMANDS = [
    ("install-plan-i", "install --plan -i {in} /dev/vda", IGN_KINDS),
    ("install-plan-c", "install --plan -c {in} /dev/vda", CFG_KINDS),
    ("install-plan-ca", "install --plan --ignition-ca {in} /dev/vda", CA_KINDS),
    (
        "iso-customize-dest-ign",
        "iso customize --dest-device /dev/vda --dest-ignition {in} -o {out} {iso}",
        IGN_KINDS,
    ),
    (
        "iso-customize-live-ign",
        "iso customize --live-ignition {in} -o {out} {iso}",
        ("json-deep", "zero"),
    ),
    ("iso-customize-config", "iso customize --installer-config {in} -o {out} {iso}", CFG_KINDS),
    ("iso-customize-ca", "iso customize --ignition-ca {in} -o {out} {iso}", CA_KINDS),
    ("iso-customize-keyfile", "iso customize --network-keyfile {in} -o {out} {iso}", NAME_KINDS),
    ("iso-customize-script", "iso customize --pre-install {in} -o {out} {iso}", NAME_KINDS),
    (
        "pxe-customize-dest-ign",
        "pxe customize --dest-device /dev/vda --dest-ignition {in} -o {out} {initrd}",
        ("json-deep", "zero"),
    ),
    (
        "pxe-customize-config",
        "pxe customize --installer-config {in} -o {out} {initrd}",
        ("yaml-deep", "yaml-secure-ipl"),
    ),
    ("iso-network-embed-keyfile", "iso network embed -k {in} -o {out} {iso}", NAME_KINDS),
    ("pxe-network-wrap", "pxe network wrap -k {in} -o {out}", NAME_KINDS),
    ("iso-ignition-embed-ign", "iso ignition embed -i {in} -o {out} {iso}", GENERIC),
    ("pxe-ignition-wrap", "pxe ignition wrap -i {in} -o {out}", ("zero",)),
    # outputs that are symlinks to a file outside: refused (no clobbering), the target untouched
    ("iso-customize-out-link", "iso customize --dest-device /dev/vda -o {link} {iso}", ("out",)),
    ("pxe-ignition-wrap-out-link", "pxe ignition wrap -i {ign} -o {link}", ("out",)),
    ("iso-network-extract-link", "iso network extract -C {linkdir} {netiso}", ("out",)),
]

KNOWN: Dict[Tuple[str, str], str] = {}  # (command, input) -> why it fails today: none
QUICK = 8
"""Timeout of the known hangs: the fixed commands answer in about a second."""


def _cases() -> Iterator[object]:
    for table in (ISO_COMMANDS, INITRD_COMMANDS, INPUT_COMMANDS):
        for cid, argv, kinds in table:
            for kind in kinds:
                reason = KNOWN.get((cid, kind))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                timeout = QUICK if reason else TIMEOUT
                yield pytest.param(argv, kind, timeout, id=f"{cid}:{kind}", marks=marks)


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    require_tools("xorriso", "cpio", "xz", "gzip")
    d = tmp_path_factory.mktemp("base")
    iso = Path(build("nestos", str(d)))
    initrd = d / "initrd.img"
    stamps = {"etc/nestos-live-initramfs": b"", "etc/nestos/features.json": b""}
    stamps["etc/nestos/features.json"] = json.dumps(LIVE_FEATURES).encode()
    initrd.write_bytes(compress("gzip", gnu_cpio(stamps)))
    ign = d / "config.ign"
    ign.write_bytes(b'{"ignition": {"version": "3.4.0"}}\n')
    keyfile = d / "eth0.nmconnection"
    keyfile.write_bytes(b"[connection]\nid=eth0\ntype=ethernet\n")
    netiso = d / "net.iso"
    subprocess.run(
        [NESTOS_INSTALLER, "iso", "network", "embed", "-k", keyfile, "-o", netiso, iso],
        check=True,
        capture_output=True,
    )
    return {"iso": iso, "initrd": initrd, "ign": ign, "keyfile": keyfile, "netiso": netiso}


def listing(root: Path) -> Dict[str, str]:
    """Every entry under `root`: its type, and a digest for regular files (FIFOs are not opened)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = os.fsencode(p.relative_to(root)).decode("utf-8", "backslashreplace")
            if stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            else:
                out[rel] = stat.filemode(st.st_mode)[0]
    return out


def _argv(template: str, subst: Dict[str, Path]) -> List[str]:
    return [os.fspath(subst[w[1:-1]]) if w[:1] == "{" else w for w in template.split()]


# ---- the corpus --------------------------------------------------------------------------------
@pytest.mark.parametrize("template,kind,timeout", list(_cases()))
def test_hostile_input(
    template: str, kind: str, timeout: float, base: Dict[str, Path], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me\n")
    subst: Dict[str, Path] = {
        "out": work / "out.bin",
        "outdir": work / "outdir",
        "link": work / "link.out",
        "linkdir": work / "linkdir",
    }
    for role in ("iso", "initrd", "ign", "keyfile", "netiso"):
        subst[role] = work / f"good-{base[role].name}"
        shutil.copyfile(base[role], subst[role])
    os.symlink(outside / "victim", subst["link"])
    subst["linkdir"].mkdir()
    os.symlink(outside / "victim", subst["linkdir"] / "eth0.nmconnection")
    if kind != "out":
        subst["in"] = KINDS[kind](work, base)
    before = listing(tmp_path)
    argv = _argv(template, subst)
    check_refusal(run(argv, work, timeout), argv)
    after = listing(tmp_path)
    named = {os.fspath(p.relative_to(tmp_path)) for k, p in subst.items() if k in ("out", "outdir")}
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert {k for k in changed if not any(k == n or k.startswith(n + "/") for n in named)} == set()


# ---- stream metadata from a server that lies ---------------------------------------------------
def _stream_variant(edit: Callable[[dict], None]) -> bytes:  # type: ignore[type-arg]
    doc = json.loads((package_dir("nestos_stream") / "examples" / "2403-LTS.json").read_bytes())
    edit(doc)
    return json.dumps(doc).encode()


def _bad_release(doc: dict) -> None:  # type: ignore[type-arg]
    doc["architectures"]["x86_64"]["artifacts"]["metal"]["release"] = [1]


def _surrogate_arch(doc: dict) -> None:  # type: ignore[type-arg]
    formats = doc["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]
    formats["\ud800"] = formats["raw.xz"]


STREAMS: Dict[str, bytes] = {
    "deep": b"[" * 100000,
    "deep-object": b'{"stream": "s", "architectures": {"x": ' + b"[" * 50000,
    "not-utf8": b'{"stream": "\xff"}',
    "truncated": b'{"stream": "2403-LTS", "architectures": {"x86_64": {"artif',
    "digits": b'{"stream": ' + b"1" * 5000 + b"}",
    "wrong-type": _stream_variant(_bad_release),
    "huge": b" " * ((64 << 20) + 1),
}


@pytest.fixture(scope="module")
def lying_server() -> Iterator[str]:
    with TestServer() as srv:
        for name, data in STREAMS.items():
            srv.add(f"{name}/2403-LTS.json", data)
        srv.add("surrogate/2403-LTS.json", _stream_variant(_surrogate_arch))
        yield srv.url("")


@pytest.mark.parametrize("command", ["list-stream", "download"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_hostile_stream(command: str, name: str, lying_server: str, tmp_path: Path) -> None:
    argv = [command, "--stream-base-url", f"{lying_server}{name}/"]
    if command == "download":
        argv += ["-a", "x86_64", "-C", str(tmp_path)]
    before = listing(tmp_path)
    check_refusal(run(argv, tmp_path), argv)
    assert listing(tmp_path) == before


def test_stream_names_that_are_not_unicode_are_printed(lying_server: str, tmp_path: Path) -> None:
    proc = run(["list-stream", "--stream-base-url", f"{lying_server}surrogate/"], tmp_path)
    assert proc.returncode == 0 and b"\\ud800" in proc.stdout, proc.stderr


def test_https_refusal_in_user_terms(tmp_path: Path) -> None:
    """A server whose certificate nobody trusts: one line naming host and port."""
    tls = TlsFiles.generate(tmp_path)
    with TestServer(tls=tls) as srv:
        srv.add("2403-LTS.json", b"{}")
        argv = ["list-stream", "--stream-base-url", srv.url("")]
        env = {k: v for k, v in os.environ.items() if not k.endswith("_CA_BUNDLE")}
        env.pop("SSL_CERT_FILE", None)
        proc = subprocess.run(
            [NESTOS_INSTALLER, *argv], capture_output=True, timeout=TIMEOUT, env=env, check=False
        )
    check_refusal(proc, argv)
    assert b"TLS error with 127.0.0.1:" in proc.stderr and b"Caused by" not in proc.stderr
