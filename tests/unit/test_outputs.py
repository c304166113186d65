"""nestos_installer.outputs on real files: no clobber, no temp left behind, final modes from the
start, and exactly one winner when creators race for the same name."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from helpers.capabilities import require
from nestos_installer import outputs
from nestos_installer.errors import NestosError, OutputExists


def temps(d: Path) -> List[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(outputs.TEMP_PREFIX))


def test_new_file_appears_only_when_complete(tmp_path: Path) -> None:
    dest = tmp_path / "out.img"
    with outputs.new_file(dest) as out:
        out.file.write(b"hello ")
        assert not dest.exists()
        assert out.path.parent == tmp_path and out.path.name.startswith(outputs.TEMP_PREFIX)
        out.file.write(b"world")
    assert dest.read_bytes() == b"hello world"
    assert temps(tmp_path) == []


def test_existing_destination_is_an_error_in_user_terms(tmp_path: Path) -> None:
    dest = tmp_path / "b.iso"
    dest.write_bytes(b"keep")
    with pytest.raises(OutputExists) as exc:
        outputs.write_file(dest, b"new")
    assert str(exc.value) == f"{dest} already exists; remove it or choose another name"
    assert "Errno" not in str(exc.value)
    assert dest.read_bytes() == b"keep" and temps(tmp_path) == []
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExists):
        outputs.write_file(dangling, b"new")
    assert not (tmp_path / "nowhere").exists()


def test_destination_appearing_while_writing_is_not_clobbered(tmp_path: Path) -> None:
    dest = tmp_path / "late.img"
    with pytest.raises(OutputExists):
        with outputs.new_file(dest) as out:
            out.file.write(b"ours")
            dest.write_bytes(b"theirs")  # another writer got there first
    assert dest.read_bytes() == b"theirs" and temps(tmp_path) == []


def test_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "x.img"
    with pytest.raises(RuntimeError, match="boom"):
        with outputs.new_file(dest) as out:
            out.file.write(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with outputs.new_file(dest, secret=True) as out:
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_named_not_the_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "nodir" / "x.img"
    with pytest.raises(NestosError) as exc:
        outputs.write_file(dest, b"x")
    assert str(exc.value) == f"cannot create {dest}: No such file or directory"


def test_modes_are_final_from_the_start(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with outputs.new_file(tmp_path / "secret.ign", secret=True) as out:
            assert stat.S_IMODE(os.fstat(out.file.fileno()).st_mode) == 0o600
        with outputs.new_file(tmp_path / "plain.img") as out:
            assert stat.S_IMODE(os.fstat(out.file.fileno()).st_mode) == 0o640
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.ign").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain.img").stat().st_mode) == 0o640


def test_replace_is_explicit(tmp_path: Path) -> None:
    dest = tmp_path / "x.sig"
    dest.write_bytes(b"old")
    outputs.write_file(dest, b"new", replace=True)
    assert dest.read_bytes() == b"new" and temps(tmp_path) == []


def test_concurrent_threads_only_one_wins(tmp_path: Path) -> None:
    dest = tmp_path / "race.img"
    start = threading.Barrier(8)
    results: List[str] = [""] * 8

    def create(i: int) -> None:
        start.wait()
        try:
            outputs.write_file(dest, f"writer {i}".encode() * 1000)
            results[i] = "won"
        except OutputExists:
            results[i] = "exists"

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1 and results.count("exists") == 7
    winner = results.index("won")
    assert dest.read_bytes() == f"writer {winner}".encode() * 1000
    assert temps(tmp_path) == []


RACER = """
import os, sys, time
from nestos_installer import outputs
from nestos_installer.errors import OutputExists
dest, go, me = sys.argv[1:]
while not os.path.exists(go):
    time.sleep(0.001)
try:
    outputs.write_file(dest, me.encode() * 100000)
    print("won")
except OutputExists:
    print("exists")
"""


def test_concurrent_processes_only_one_wins(tmp_path: Path) -> None:
    dest, go = tmp_path / "race.img", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(dest), str(go), str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    go.touch()
    got = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(got) == ["exists", "exists", "exists", "won"]
    assert dest.read_bytes() == str(got.index("won")).encode() * 100000
    assert temps(tmp_path) == []


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    """The fallback for filesystems without hard links, exercised here on any filesystem."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(b"new")
    dest.write_bytes(b"keep")
    with pytest.raises(OutputExists):
        outputs._rename_noreplace(src, dest)
    assert dest.read_bytes() == b"keep" and src.read_bytes() == b"new"
    dest.unlink()
    outputs._rename_noreplace(src, dest)
    assert dest.read_bytes() == b"new" and not src.exists()


# A process whose link(2)/linkat(2) the kernel refuses with EPERM (a seccomp filter), as a
# filesystem without hard links does: the publish must fall back to renameat2(NOREPLACE).
NO_LINKS = """
import ctypes, errno, os, platform, struct, sys
ARCH = {"x86_64": (0xC000003E, 86, 265), "aarch64": (0xC00000B7, 37, 37)}[platform.machine()]
ALLOW, EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
prog = [
    (0x20, 0, 0, 4), (0x15, 0, 4, ARCH[0]),  # arch: other -> allow
    (0x20, 0, 0, 0), (0x15, 1, 0, ARCH[1]), (0x15, 0, 1, ARCH[2]),  # link / linkat
    (0x06, 0, 0, EPERM), (0x06, 0, 0, ALLOW),
]
buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, os.strerror(ctypes.get_errno())

from nestos_installer import outputs
from nestos_installer.errors import OutputExists
d = sys.argv[1]
open(os.path.join(d, "probe"), "wb").close()
try:
    os.link(os.path.join(d, "probe"), os.path.join(d, "probe2"))
    print("link allowed")
except PermissionError:
    print("link refused")
outputs.write_file(os.path.join(d, "a.img"), b"data")
try:
    outputs.write_file(os.path.join(d, "a.img"), b"other")
    print("clobbered")
except OutputExists as e:
    print(e)
"""


def test_publish_where_hard_links_are_refused(tmp_path: Path) -> None:
    require(
        os.uname().machine in ("x86_64", "aarch64"),
        "the seccomp filter here knows the link syscalls of x86_64 and aarch64",
    )
    proc = subprocess.run(
        [sys.executable, "-c", NO_LINKS, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "link refused",
        f"{tmp_path / 'a.img'} already exists; remove it or choose another name",
    ]
    assert (tmp_path / "a.img").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "probe"]
