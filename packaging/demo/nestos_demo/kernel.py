"""The demo's kernel: Debian's current linux-image, downloaded and unpacked into the cache.

Never installs the package (that would run update-initramfs and fill /boot); `apt-get download`
+ `dpkg-deb -x` + `depmod -b` into ${XDG_CACHE_HOME:-~/.cache}/nestos-installer/kernel/<ver>.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from nestos_demo.util import BuildError, cache_root, file_lock, run

META_PACKAGE = "linux-image-amd64"


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: `root` holds boot/vmlinuz-<version> and lib/modules/<version>."""

    version: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    def module_files(self, names: Sequence[str]) -> List[Path]:
        """The .ko files for `names` and their dependencies, in load order, no duplicates."""
        out = run(["modprobe", "-d", self.root, "-S", self.version, "--show-depends", "-a", *names])
        seen: List[Path] = []
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                p = Path(parts[1])
                if p not in seen:
                    seen.append(p)
        return seen


def resolve_package() -> str:
    """The versioned package linux-image-amd64 depends on (apt-get update once if unknown)."""
    for attempt in range(2):
        try:
            text = run(["apt-cache", "depends", META_PACKAGE]).decode()
        except BuildError:
            text = ""
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s<>]*)", text)
        if m:
            return m.group(1)
        if attempt == 0:
            run(["apt-get", "update", "-qq"])
    raise BuildError(f"apt-cache knows no {META_PACKAGE}; cannot find a kernel for the demo")


def ensure_kernel() -> Kernel:
    """Return the cached kernel for the current Debian kernel package, fetching it if needed."""
    package = resolve_package()
    version = package[len("linux-image-") :]
    base = cache_root() / "kernel"
    final = base / version
    if (final / ".complete").exists():
        return Kernel(version, final)
    with file_lock(base / f"{version}.lock"):
        if (final / ".complete").exists():
            return Kernel(version, final)
        work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
        try:
            run(["apt-get", "download", "-q", package], cwd=work)
            debs = sorted(work.glob("*.deb"))
            if len(debs) != 1:
                raise BuildError(f"apt-get download {package} gave {len(debs)} .deb files")
            root = work / "root"
            run(["dpkg-deb", "-x", debs[0], root])
            debs[0].unlink()
            if not (root / "boot" / f"vmlinuz-{version}").exists():
                raise BuildError(f"{package} has no /boot/vmlinuz-{version}")
            run(["depmod", "-b", root, version])
            (root / ".complete").write_text(package + "\n")
            if final.exists():
                shutil.rmtree(final)
            root.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Kernel(version, final)
