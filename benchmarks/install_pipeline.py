#!/usr/bin/env python3
"""Benchmark: `nestos-installer install --image-url` vs the hand pipeline
`curl URL | xz -dc -T0 | dd of=DISK bs=1M oflag=direct` on the same signed .raw.xz.

Needs root (loop device). Builds (once, cached) a >= 1 GiB image with disk-like content: the
demo metal image followed by 1 MiB blocks of real files from /usr (50%), random bytes (10%)
and zeros (40%), xz -6 multi-block, signed by a throw-away key. Serves it from 127.0.0.1,
then alternates the two installs onto a loop disk, N runs each, and prints both medians, our
peak RSS and the ratio (hand time / our time: >= 1.0 means we are as fast).

Usage: sudo .venv/bin/python benchmarks/install_pipeline.py [--runs 3] [--size-mib 1100]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nestos-installer"
MIB = 1 << 20
REPO = Path(__file__).resolve().parents[1]


def usr_blocks():  # type: ignore[no-untyped-def]
    """An endless supply of 1 MiB blocks of real file contents."""
    buf = b""
    while True:
        for root, _dirs, files in os.walk("/usr"):
            for f in files:
                p = os.path.join(root, f)
                try:
                    if os.path.islink(p) or os.path.getsize(p) > 64 * MIB:
                        continue
                    buf += Path(p).read_bytes()
                except OSError:
                    continue
                while len(buf) >= MIB:
                    yield buf[:MIB]
                    buf = buf[MIB:]


def build_image(size_mib: int) -> Path:
    out = CACHE / "bench" / f"install-{size_mib}"
    img_xz = out / "bench.raw.xz"
    if (img_xz.with_suffix(".xz.sig")).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "packaging" / "demo"))
    from nestos_demo.build import build

    demo = build(None)
    raw = out / "bench.raw"
    rnd = random.Random(42)
    blocks = usr_blocks()
    print(f"building a {size_mib} MiB image (one-off, cached in {out}) ...", flush=True)
    with open(raw, "wb") as f:
        f.write(demo.raw.read_bytes())
        while f.tell() < size_mib * MIB:
            r = rnd.random()
            if r < 0.5:
                f.write(next(blocks))
            elif r < 0.6:
                f.write(os.urandom(MIB))
            else:
                f.write(bytes(MIB))
    subprocess.run(["xz", "-6", "-T0", "--block-size=64MiB", "-f", "-k", str(raw)], check=True)
    home = Path(tempfile.mkdtemp())
    gpg = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    subprocess.run(
        [*gpg, "--quick-gen-key", "bench@nestos.invalid", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    with open(out / "key.asc", "wb") as f:
        subprocess.run([*gpg, "--armor", "--export"], check=True, stdout=f)
    subprocess.run([*gpg, "--detach-sign", "-o", str(img_xz) + ".sig", str(img_xz)], check=True)
    shutil.rmtree(home, ignore_errors=True)
    raw.unlink()
    return out


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(QuietHandler, directory=str(directory))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


RSS_WRAPPER = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF)"
    ".ru_maxrss, file=sys.stderr))\n"
    "from nestos_installer.cli import main\n"
    "sys.argv[0] = 'nestos-installer'\n"
    "main()\n"
)


def ours(url: str, key: Path, dev: str) -> tuple[float, int]:
    t = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_WRAPPER,
            "install",
            "-u",
            url,
            "--keyring",
            str(key),
            "--progress",
            "none",
            dev,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    dt = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"our install failed:\n{proc.stderr}")
    rss = int(proc.stderr.split("MAXRSS_KIB", 1)[1].split()[0])
    return dt, rss


def hand(url: str, dev: str) -> float:
    t = time.monotonic()
    subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"curl -sS '{url}' | xz -dc -T0 | dd of={dev} bs=1M iflag=fullblock "
            "oflag=direct status=none",
        ],
        check=True,
    )
    subprocess.run(["sync"], check=True)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop device)")
    d = build_image(args.size_mib)
    srv = serve(d)
    url = f"http://127.0.0.1:{srv.server_address[1]}/bench.raw.xz"
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        with open(disk, "wb") as f:
            f.truncate((args.size_mib + 256) * MIB)
        dev = subprocess.run(
            ["losetup", "-f", "--show", str(disk)], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            t_ours, t_hand, rss = [], [], []
            for i in range(args.runs):
                if i % 2:  # alternate who goes first: neither always gets the cooler machine
                    t_hand.append(hand(url, dev))
                dt, r = ours(url, d / "key.asc", dev)
                t_ours.append(dt)
                rss.append(r)
                if not i % 2:
                    t_hand.append(hand(url, dev))
                print(
                    f"run {i + 1}: ours {t_ours[-1]:.2f} s (peak RSS {r / 1024:.0f} MiB), "
                    f"hand {t_hand[-1]:.2f} s",
                    flush=True,
                )
        finally:
            subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", dev], check=False)
    mo, mh = statistics.median(t_ours), statistics.median(t_hand)
    size = (d / "bench.raw.xz").stat().st_size
    print(f"image: {args.size_mib} MiB raw, {size / MIB:.0f} MiB xz")
    print(f"nestos-installer install (signature + xz -T0 + write + fsync): median {mo:.2f} s")
    print(f"curl | xz -dc -T0 | dd oflag=direct + sync (no verification): median {mh:.2f} s")
    print(f"our peak RSS: {max(rss) / 1024:.0f} MiB")
    print(f"ratio (hand / ours, >= 1.0 means no slower): {mh / mo:.2f}")


if __name__ == "__main__":
    main()
