"""Throughput of the install pipeline parts: xz (program / stdlib), gpg verifier, and all together.

Run: .venv/bin/python benchmarks/bench_pipeline_parts.py [--size-mib 100] [--image PATH.xz]
Prints MB/s of decompressed output (and of raw input for gpg). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.gpgkeys import TestKey  # noqa: E402
from nestos_installer.pipeline.decompress import decompressed  # noqa: E402
from nestos_installer.pipeline.progress import Progress, ProgressMode  # noqa: E402
from nestos_installer.pipeline.readers import TeeReader, copy_stream  # noqa: E402
from nestos_installer.signature.policy import Keyring  # noqa: E402
from nestos_installer.signature.verifier import SignatureVerifier  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "nestos-bench"


def disk_like(size_mib: int) -> bytes:
    """Half library code, 10% random, 40% zeros, in 1 MiB blocks (like a metal image)."""
    rng = random.Random(1)
    libs = sorted(Path("/usr/lib").rglob("*.so*"))
    pool = bytearray()
    for p in libs:
        if p.is_file() and not p.is_symlink():
            pool += p.read_bytes()
        if len(pool) > 256 << 20:
            break
    if len(pool) < 2 << 20:
        pool = bytearray(rng.randbytes(1 << 20) * 4)
    out = bytearray()
    pos = 0
    for _ in range(size_mib):
        r = rng.random()
        if r < 0.5:
            if pos + (1 << 20) > len(pool):
                pos = 0
            out += pool[pos : pos + (1 << 20)]
            pos += 1 << 20
        elif r < 0.6:
            out += rng.randbytes(1 << 20)
        else:
            out += bytes(1 << 20)
    return bytes(out)


def image(size_mib: int) -> Tuple[Path, int]:
    CACHE.mkdir(exist_ok=True)
    xz = CACHE / f"disk-{size_mib}M.raw.xz"
    if not xz.exists():
        raw = disk_like(size_mib)
        print(f"compressing {size_mib} MiB with xz -6 -T0 (once; cached in {CACHE})")
        tmp = xz.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            subprocess.run(["xz", "-6", "-T0", "-c"], input=raw, stdout=f, check=True)
        tmp.rename(xz)
    out = subprocess.run(["xz", "--robot", "-l", str(xz)], stdout=subprocess.PIPE, check=True)
    totals = [ln.split("\t") for ln in out.stdout.decode().splitlines() if ln.startswith("totals")]
    return xz, int(totals[0][4])


def timed(label: str, nbytes: int, fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    dt = time.monotonic() - start
    print(f"{label:58s} {dt:6.2f} s  {nbytes / dt / 1e6:7.1f} MB/s")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--image", type=Path, help="an existing .xz image instead of a generated one")
    args = ap.parse_args()
    if args.image:
        path = args.image
        out = subprocess.run(["xz", "--robot", "-l", str(path)], stdout=subprocess.PIPE, check=True)
        line = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("totals")][0]
        raw_size = int(line.split("\t")[4])
    else:
        path, raw_size = image(args.size_mib)
    comp_size = path.stat().st_size
    print(f"image {path}: {comp_size} bytes xz, {raw_size} bytes raw, {os.cpu_count()} cpus")

    def shell_baseline() -> None:
        with open(path, "rb") as f:
            subprocess.run(["xz", "-dc", "-T0"], stdin=f, stdout=subprocess.DEVNULL, check=True)

    def ours(use_cli: bool) -> Callable[[], None]:
        def go() -> None:
            with open(path, "rb", buffering=0) as f, decompressed(f, use_cli=use_cli) as r:
                copy_stream(r, lambda b: None)

        return go

    with tempfile.TemporaryDirectory() as d, TestKey.generate(d, "bench") as key:
        sig = key.sign(path)
        ring = Keyring([key.public_key_path])

        def gpg_only() -> None:
            with SignatureVerifier(sig, ring) as v, open(path, "rb", buffering=0) as f:
                copy_stream(f, v.feed)
                v.finish()

        def everything() -> None:
            sha = hashlib.sha256()
            progress = Progress("disk", comp_size, ProgressMode.PLAIN, io.StringIO())
            with SignatureVerifier(sig, ring) as v, open(path, "rb", buffering=0) as f:
                tee = TeeReader(f, [v.feed, sha.update, progress.on_chunk])
                with decompressed(tee) as r, open(os.devnull, "wb") as sink:
                    copy_stream(r, sink.write)
                v.finish()
            progress.close()

        timed("xz -dc -T0 < image > /dev/null (shell baseline)", raw_size, shell_baseline)
        timed("decompressed(): xz program, read in Python", raw_size, ours(True))
        timed("decompressed(): stdlib lzma", raw_size, ours(False))
        timed("SignatureVerifier alone (MB/s of compressed input)", comp_size, gpg_only)
        timed("file -> tee(gpg, sha256, progress) -> xz -> /dev/null", raw_size, everything)


if __name__ == "__main__":
    main()
