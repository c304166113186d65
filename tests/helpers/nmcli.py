"""NetworkManager's own keyfile reader as a test oracle: `nmcli --offline connection modify`
reads a keyfile on stdin and prints it normalised, or refuses it (Debian 12's nmcli has it).

Where nmcli is not installed, Debian's network-manager and libnm0 packages are fetched with
`apt-get download` and unpacked into the cache, never installed: no daemon may start here.
"""

from __future__ import annotations

import configparser
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nestos_demo.util import cache_root

PROBE = "[connection]\nid=probe\ntype=ethernet\n"


def _works(argv: List[str], env: Dict[str, str]) -> bool:
    try:
        proc = subprocess.run(
            [*argv, "--offline", "connection", "modify"],
            input=PROBE,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0 and "[connection]" in proc.stdout


def _unpacked() -> Optional[Tuple[List[str], Dict[str, str]]]:
    """nmcli from Debian's packages, unpacked once into the cache."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    out = cache_root() / "nmcli"
    if not (out / "usr/bin/nmcli").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            got = subprocess.run(
                ["apt-get", "download", "network-manager", "libnm0"],
                cwd=tmp,
                capture_output=True,
                timeout=300,
                check=False,
            )
            if got.returncode != 0:
                return None
            part = Path(tmp) / "x"
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(part)], check=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.move(str(part), str(out))
    libs = sorted({str(p.parent) for p in out.glob("usr/lib/*/libnm.so.0")})
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(libs)}
    return [str(out / "usr/bin/nmcli")], env


@functools.cache
def nmcli_offline() -> Optional[Tuple[Tuple[str, ...], Tuple[Tuple[str, str], ...]]]:
    """(argv, env) of an nmcli that has --offline, or None."""
    found: Optional[Tuple[List[str], Dict[str, str]]] = None
    if shutil.which("nmcli"):
        found = (["nmcli"], dict(os.environ))
    if found is None or not _works(*found):
        found = _unpacked()
    if found is None or not _works(*found):
        return None
    return tuple(found[0]), tuple(sorted(found[1].items()))


def normalise(text: str) -> subprocess.CompletedProcess[str]:
    """NetworkManager's reading of a keyfile: rc 0 and the keyfile it would write, or an error."""
    tool = nmcli_offline()
    assert tool is not None
    argv, env = tool
    return subprocess.run(
        [*argv, "--offline", "connection", "modify"],
        input=text,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=30,
        check=False,
    )


def ini(text: str) -> Dict[str, Dict[str, str]]:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return {s: dict(cp.items(s)) for s in cp.sections()}
