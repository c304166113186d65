"""Debian root trees for the demo guests: mmdebstrap with a reusable .deb cache, and the kernel
modules a guest needs (with their dependencies) copied in from the cached kernel package.
Packaging code (root needed for mmdebstrap --mode=root): subprocess allowed through util.run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

from nestos_demo.kernel import Kernel
from nestos_demo.util import BuildError, cache_root, file_lock, run

SUITE = "bookworm"
# docs, man pages and translations are never read in a guest: dpkg skips them
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")


def deb_cache() -> Path:
    """<cache>/debs: the .deb files of earlier builds, so rebuilds download nothing."""
    d = cache_root() / "debs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _deb_name(fields: Dict[str, str]) -> str:
    version = fields["Version"].replace(":", "%3a")
    return f"{fields['Package']}_{version}_{fields['Architecture']}.deb"


def installed_debs(root: Path) -> List[str]:
    """File names (as apt stores them) of the packages installed in `root`."""
    names: List[str] = []
    text = (root / "var" / "lib" / "dpkg" / "status").read_text(errors="replace")
    for stanza in text.split("\n\n"):
        fields: Dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value
        if "Package" in fields and "install ok installed" in fields.get("Status", ""):
            names.append(_deb_name(fields))
    return names


def _keep_debs(root: Path, archives: Path) -> None:
    """Move the .debs this root was made of from `archives` into the deb cache."""
    cache = deb_cache()
    for name in installed_debs(root):
        src = archives / name
        if src.is_file() and not (cache / name).exists():
            shutil.move(src, cache / name)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def mmdebstrap(root: Path, packages: Sequence[str], work: Path) -> None:
    """Debian minbase + `packages` into the directory `root` (merged /usr, no docs).

    .debs come from (and go back to) the deb cache; `work` holds them meanwhile.
    """
    if shutil.which("mmdebstrap") is None:
        raise BuildError(
            "mmdebstrap not found, needed for the Debian guest roots (apt: mmdebstrap)"
        )
    archives = work / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    with file_lock(deb_cache().parent / "debs.lock"):
        for deb in deb_cache().glob("*.deb"):
            _link_or_copy(deb, archives / deb.name)
    argv: List[str] = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--mode=root",
        "--skip=essential/unlink,download/empty",
        "--dpkgopt=force-unsafe-io",
        *(f"--dpkgopt={x}" for x in DPKG_EXCLUDES),
        f"--include={','.join(packages)}",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/partial',
        f"--setup-hook=sync-in {archives} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {archives}",
        '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
    ]
    if MERGED_USR_HOOKS.is_dir():
        # the merged-usr hook instead of the usrmerge package (which pulls in perl)
        argv.append(f"--hook-dir={MERGED_USR_HOOKS}")
    run([*argv, SUITE, root])
    with file_lock(deb_cache().parent / "debs.lock"):
        _keep_debs(root, archives)
    shutil.rmtree(archives, ignore_errors=True)


def module_known(kernel: Kernel, name: str) -> bool:
    """False for modules built into the kernel (modprobe would print `builtin`)."""
    try:
        kernel.module_files([name])
    except BuildError:
        return False
    return True


def install_modules(root: Path, kernel: Kernel, modules: Sequence[str]) -> None:
    """Copy `modules` (those that are not built in) and their dependencies into `root`.

    No modules-load.d: udev loads device drivers by modalias, mount asks for fs-* modules,
    and loading everything up front costs ~20 s under TCG.
    """
    mod_root = kernel.root / "lib" / "modules" / kernel.version
    # merged /usr: /lib is a symlink to usr/lib
    lib = root / "usr" / "lib" if (root / "lib").is_symlink() else root / "lib"
    dest = lib / "modules" / kernel.version
    dest.mkdir(parents=True, exist_ok=True)
    available = [m for m in modules if module_known(kernel, m)]
    for ko in kernel.module_files(available):
        rel = ko.resolve().relative_to(mod_root.resolve())
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ko, dest / rel)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (mod_root / name).exists():
            shutil.copy2(mod_root / name, dest / name)
    run(["depmod", "-b", root, kernel.version])


def chroot_env() -> Dict[str, str]:
    """A plain environment for commands run in a guest root (no host venv, no locale)."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "PYTHONPATH": "",
        "VIRTUAL_ENV": "",
    }


def remove_paths(root: Path, rels: Sequence[str]) -> None:
    """Delete files, symlinks or trees under `root` (missing ones are fine)."""
    for rel in rels:
        p = root / rel
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


def write_file(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    """Write `text` to root/rel (parents 0755), replacing a file or symlink there."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_text(text)
    os.chmod(p, mode)
    return p
