"""The .deb packages installed with their dependencies into a fresh Debian bookworm chroot
(mmdebstrap; base tarball cached by input hash): CLI, man pages and the systemd generator.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.capabilities import require, require_tools
from nestos_installer import __version__

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.xdist_group("packaging")]

SUITE = "bookworm"
INCLUDE = "man-db,ca-certificates"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
APTOPTS = ('Acquire::Check-Valid-Until "false"', 'Acquire::Retries "3"')


def base_tarball() -> Path:
    """mmdebstrap's bookworm base (apt variant + man-db), built once per input hash."""
    version = subprocess.run(
        ["mmdebstrap", "--version"], check=False, capture_output=True, text=True, timeout=60
    ).stdout
    sources = SOURCES.read_text() if SOURCES.is_file() else ""
    key = hashlib.sha256("\n".join([SUITE, INCLUDE, sources, *APTOPTS, version]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nestos-installer"
    tarball = cache / f"mmdebstrap-{SUITE}-{key.hexdigest()[:16]}.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{tarball.stem}.partial{os.getpid()}.tar"  # the suffix picks the format
    cmd = ["mmdebstrap", "--variant=apt", f"--include={INCLUDE}", "--quiet"]
    cmd += [f"--aptopt={opt}" for opt in APTOPTS]
    cmd += [SUITE, str(partial)]
    if sources:
        cmd.append(str(SOURCES))  # reach the mirror the way the host's apt does
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    partial.replace(tarball)
    return tarball


def in_chroot(root: Path, script: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run `script` in the chroot, with /proc and /dev mounted in a private mount namespace
    (the mounts vanish with the namespace)."""
    inner = (
        f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
        f'exec chroot {root} /bin/sh -ec "$0"'
    )
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
        "MANWIDTH": "100",
    }
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", inner, script],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def chroot(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(os.geteuid() == 0, "needs root (chroot, mount namespace)")
    require_tools("mmdebstrap", "unshare", "chroot")
    root = tmp_path_factory.mktemp("debroot")
    untar = subprocess.run(
        ["tar", "-C", str(root), "-xf", str(base_tarball())],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert untar.returncode == 0, untar.stderr
    debs = sorted(built.glob("*_all.deb"))
    assert {p.name.split("_")[0] for p in debs} == {"nestos-installer", "x2nestos"}
    for deb in debs:
        shutil.copy(deb, root / "tmp")
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    names = " ".join(f"/tmp/{p.name}" for p in debs)
    proc = in_chroot(
        root,
        f"apt-get update -q && apt-get install -y -q --no-install-recommends {names}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def test_cli_runs(chroot: Path) -> None:
    tools = ("gpgv", "gpg", "xz", "sfdisk", "wipefs", "mkfs.ext4", "kexec")
    proc = in_chroot(
        chroot,
        "nestos-installer --version; x2nestos doctor -h; "
        f"for t in {' '.join(tools)}; do echo tool $(command -v $t); done",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"nestos-installer {__version__}"
    assert "usage: x2nestos doctor" in proc.stdout
    found = [line.split()[1] for line in lines if line.startswith("tool /")]
    assert [Path(f).name for f in found] == list(tools), lines


def test_man_pages_render(chroot: Path) -> None:
    proc = in_chroot(chroot, "man nestos-installer-iso-customize; man 8 x2nestos-convert")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "nestos-installer iso customize [OPTIONS] ISO" in text
    assert "--dest-device" in text.replace("\u2010", "-")
    assert "x2nestos convert" in text


def test_generator(chroot: Path) -> None:
    gen = "/usr/lib/systemd/system-generators/nestos-installer-generator"
    script = f"""
test -x {gen}
t=$(mktemp -d); mkdir $t/conf
run() {{
    rm -rf $t/out $t/flag; printf '%s\\n' "$1" >$t/cmdline
    NESTOS_INSTALLER_CMDLINE=$t/cmdline NESTOS_INSTALLER_CONFIG_DIR=$t/conf \\
    NESTOS_INSTALLER_REBOOT_FLAG=$t/flag NESTOS_INSTALLER_LOG=$t/log {gen} $t/out $t/e $t/l
    echo "case: $(readlink -e $t/out/default.target || echo none)" \\
        "$(test -e $t/flag && echo reboot || echo noreboot)"
}}
run "quiet nestos.inst.install_dev=/dev/vda"
run "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot=1"
run "quiet splash"
"""
    proc = in_chroot(chroot, script)
    assert proc.returncode == 0, proc.stderr
    post = "/usr/lib/systemd/system/nestos-installer-post.target"
    assert [line for line in proc.stdout.splitlines() if line.startswith("case:")] == [
        f"case: {post} reboot",
        f"case: {post} noreboot",
        "case: none noreboot",
    ]
