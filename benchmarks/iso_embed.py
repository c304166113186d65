"""Benchmark: `nestos-installer iso ignition embed` in place on a 1 GiB live ISO.

Builds a NestOS-layout ISO (tests/fixtures/iso/gen_isos.py) whose rootfs.img is SIZE MiB, then
times the embed (whole process, median of RUNS) and checks that only the embed area changed
(target: < 0.5 s). A script, not a test:
    .venv/bin/python benchmarks/iso_embed.py [--size-mib 1024] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.iso.gen_isos import LAYOUTS, _tree, _xorriso  # noqa: E402

INSTALLER = str(Path(sys.executable).with_name("nestos-installer"))


def digest_outside(path: str, offset: int, length: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            pos = f.tell()
            if pos < offset <= pos + (1 << 20):
                buf = f.read(offset - pos)
                f.seek(offset + length)
            else:
                buf = f.read(1 << 20)
            if not buf:
                return h.hexdigest()
            h.update(buf)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        root = os.path.join(tmp, "root")
        _tree(root, "nestos", LAYOUTS["nestos"], minimal=False)
        with open(os.path.join(root, "images/pxeboot/rootfs.img"), "wb") as f:
            f.truncate(a.size_mib << 20)
        iso = os.path.join(tmp, "big.iso")
        _xorriso(root, iso, rr=True)
        os.unlink(os.path.join(root, "images/pxeboot/rootfs.img"))
        os.sync()  # the fresh ISO's dirty pages are xorriso's cost, not ours
        area = json.loads(
            subprocess.run(
                [INSTALLER, "dev", "show", "iso", "--ignition", iso],
                check=True,
                capture_output=True,
            ).stdout
        )
        before = digest_outside(iso, area["offset"], area["length"])
        cfg = os.path.join(tmp, "config.ign")
        Path(cfg).write_text('{"ignition": {"version": "3.3.0"}}\n')
        times = []
        for _ in range(a.runs):
            t = time.monotonic()
            subprocess.run(
                [INSTALLER, "iso", "ignition", "embed", "-f", "-i", cfg, iso], check=True
            )
            times.append(time.monotonic() - t)
        from nestos_installer.live import isoops

        lib = []
        for _ in range(a.runs):
            t = time.monotonic()
            isoops.ignition_embed(iso, Path(cfg).read_bytes(), True, None)
            lib.append(time.monotonic() - t)
        after = digest_outside(iso, area["offset"], area["length"])
        shown = subprocess.run(
            [INSTALLER, "iso", "ignition", "show", iso], check=True, capture_output=True
        ).stdout
        print(
            f"iso size: {os.path.getsize(iso) / (1 << 20):.0f} MiB, area "
            f"{area['offset']}+{area['length']}"
        )
        print(
            f"embed in place: median {statistics.median(times):.3f} s "
            f"(runs: {', '.join(f'{x:.3f}' for x in times)}), target < 0.5 s"
        )
        print(f"library call alone (no interpreter start): median {statistics.median(lib):.3f} s")
        print(
            f"bytes outside the area unchanged: {before == after}; "
            f"config round trip: {shown == Path(cfg).read_bytes()}"
        )


if __name__ == "__main__":
    main()
