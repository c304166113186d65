"""Benchmark: `nestos-installer download` (sha256 + GPG verified) vs `curl -o`, 1 GiB, loopback.

Runs the two alternately RUNS times each against the test HTTP server (sendfile) and prints the
medians and the throughput ratio curl_time / our_time (target >= 0.9). For scale it also times
ours with sha256 only, and the same checks done by standard tools (curl | tee into
`openssl dgst -sha256` and `sqv`). A script, not a test:
    .venv/bin/python benchmarks/download.py [--size-mib 1024] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.gpgkeys import TestKey  # noqa: E402
from helpers.httpserver import TestServer  # noqa: E402

INSTALLER = str(Path(sys.executable).with_name("nestos-installer"))


def make_image(path: Path, size: int) -> str:
    """Incompressible-ish data (a random 16 MiB block, varied per block), returns its sha256."""
    block = os.urandom(16 << 20)
    h = hashlib.sha256()
    with path.open("wb") as f:
        written = 0
        i = 0
        while written < size:
            chunk = (i.to_bytes(8, "little") + block[8:])[: size - written]
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
            i += 1
    return h.hexdigest()


def timed(argv: List[str]) -> float:
    os.sync()  # untimed: no run pays for the previous run's 1 GiB of writeback
    start = time.monotonic()
    subprocess.run(
        argv,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a tmpdir)")
    args = ap.parse_args()
    if shutil.which("curl") is None or shutil.which("gpg") is None:
        sys.exit("needs curl and gpg")
    work = Path(tempfile.mkdtemp(prefix="nestos-dl-bench-", dir=args.dir))
    key = TestKey.generate(work, "bench")
    try:
        image = work / "nestos-bench.x86_64.iso"
        size = args.size_mib << 20
        digest = make_image(image, size)
        # SHA-256, as release keys sign (gpg's default for ed25519 keys would be SHA-512).
        sig = subprocess.run(
            [
                "gpg",
                "--homedir",
                key.home,
                "--batch",
                "--digest-algo",
                "SHA256",
                "--local-user",
                key.fingerprint,
                "--detach-sign",
                "--output",
                "-",
                str(image),
            ],
            check=True,
            capture_output=True,
        ).stdout
        with TestServer() as srv:
            url = srv.add("builds/nestos-bench.x86_64.iso", image)
            srv.add("builds/nestos-bench.x86_64.iso.sig", sig)
            art = {"location": url, "signature": url + ".sig", "sha256": digest}
            unsigned = {"location": url, "sha256": digest}
            stream = {
                "stream": "bench",
                "architectures": {
                    "x86_64": {
                        "artifacts": {
                            "metal": {"release": "1", "formats": {"iso": {"disk": art}}},
                            "unsigned": {"release": "1", "formats": {"iso": {"disk": unsigned}}},
                        }
                    }
                },
            }
            srv.add("streams/bench.json", json.dumps(stream).encode())
            ours_argv = [
                INSTALLER,
                "download",
                "--stream-base-url",
                srv.url("streams/"),
                "-s",
                "bench",
                "-a",
                "x86_64",
                "-f",
                "iso",
                "--keyring",
                str(key.public_key_path),
                "--progress",
                "none",
            ]
            out = work / "out"
            curl_times: List[float] = []
            our_times: List[float] = []
            sha_times: List[float] = []
            tools_times: List[float] = []
            (work / "image.sig").write_bytes(sig)
            # The same checks with standard tools: one curl, tee'd into sha256 and sqv.
            tools = shutil.which("sqv") is not None and shutil.which("openssl") is not None
            for _ in range(args.runs):
                for which in ("curl", "ours", "sha256-only", "tools"):
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    if which == "curl":
                        curl_times.append(timed(["curl", "-sSf", "-o", str(out / image.name), url]))
                    elif which == "tools":
                        if tools:
                            script = (
                                f"curl -sSf '{url}' | tee >(openssl dgst -sha256 >/dev/null) "
                                f">(sqv --keyring '{key.public_key_path}' '{work}/image.sig' "
                                f"/dev/stdin >/dev/null) > '{out}/{image.name}'"
                            )
                            tools_times.append(timed(["bash", "-o", "pipefail", "-c", script]))
                    elif which == "sha256-only":
                        sha_times.append(
                            timed([*ours_argv, "-p", "unsigned", "--insecure", "-C", str(out)])
                        )
                    else:
                        our_times.append(timed([*ours_argv, "-C", str(out)]))
                        got = out / image.name
                        if got.stat().st_size != size:
                            sys.exit("download produced a wrong file")
            shutil.rmtree(out, ignore_errors=True)
        # gpg alone hashing the file on disk (what the gpg backend is bound by).
        gpg_alone = timed(
            [
                "gpg",
                "--homedir",
                key.home,
                "--batch",
                "-q",
                "--verify",
                str(work / "image.sig"),
                str(image),
            ]
        )
        curl_med = statistics.median(curl_times)
        our_med = statistics.median(our_times)
        mib = size / (1 << 20)
        print(f"file: {mib:.0f} MiB over 127.0.0.1, {args.runs} runs each, alternating")
        print(
            f"curl -o            : median {curl_med:6.2f} s  ({mib / curl_med:7.1f} MiB/s)  "
            f"runs {', '.join(f'{t:.2f}' for t in curl_times)}"
        )
        print(
            f"nestos-installer   : median {our_med:6.2f} s  ({mib / our_med:7.1f} MiB/s)  "
            f"runs {', '.join(f'{t:.2f}' for t in our_times)}"
        )
        sha_med = statistics.median(sha_times)
        print(
            f"  without GPG (sha256 only): median {sha_med:6.2f} s  "
            f"({mib / sha_med:7.1f} MiB/s)  runs {', '.join(f'{t:.2f}' for t in sha_times)}"
        )
        print(
            f"  gpg --verify alone on the file: {gpg_alone:6.2f} s  ({mib / gpg_alone:7.1f} MiB/s)"
        )
        if tools_times:
            tools_med = statistics.median(tools_times)
            print(
                f"  curl | tee >(openssl dgst -sha256) >(sqv ...) > file (same checks): median "
                f"{tools_med:6.2f} s  runs {', '.join(f'{t:.2f}' for t in tools_times)}"
            )
        print(f"ratio (curl time / our time): {curl_med / our_med:.2f}  (target >= 0.9)")
        print(f"ratio without GPG           : {curl_med / sha_med:.2f}")
    finally:
        key.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
