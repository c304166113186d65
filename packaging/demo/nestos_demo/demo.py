"""`python -m nestos_demo run`: build, serve over local HTTP, install with the real
nestos-installer onto a loop disk, then boot that disk with BIOS and UEFI and check what it saw.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

from nestos_demo import qemu
from nestos_demo.build import Artifacts, build
from nestos_demo.util import BuildError, Steps, run

TARGET_SIZE = 512 << 20
KARG = "nestos.demo=1"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1:<free port> from a thread; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def loop_disk(path: Path, size: int) -> Iterator[str]:
    """A sparse file of `size` bytes attached to a free loop device; detached afterwards."""
    with open(path, "wb") as f:
        f.truncate(size)
    dev = run(["losetup", "-f", "--show", path]).decode().strip()
    try:
        yield dev
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


def install_argv(url: str, art: Artifacts, device: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "nestos_installer",
        "install",
        "--image-url",
        url + art.raw_xz.name,
        "--keyring",
        str(art.public_key),
        "--ignition-file",
        str(art.ignition),
        "--append-karg",
        KARG,
        device,
    ]


def check_boot(result: qemu.BootResult, art: Artifacts) -> List[str]:
    """What is wrong with an installed-disk boot (empty list: all good)."""
    if not result.ok:
        return [f"the guest did not finish: {result.describe()}"]
    f = result.fields()
    problems = []
    cmdline = f.get("cmdline", "").split()
    if KARG not in cmdline:
        problems.append(f"karg {KARG} missing from the kernel command line")
    if "ignition.firstboot" not in cmdline:
        problems.append("ignition.firstboot missing from the kernel command line")
    try:
        seen = json.loads(f.get("config_ign", ""))
    except ValueError:
        seen = None
    if seen != json.loads(art.ignition.read_text()):
        problems.append("the Ignition config on /boot differs from demo.ign (or is missing)")
    return problems


def run_demo(out: Optional[Path], firmwares: Sequence[str], steps: Steps) -> int:
    """The whole demo; returns the process exit status."""
    t0 = time.monotonic()
    steps.say("NestOS installer demo: build -> serve -> install -> boot\n")
    if os.geteuid() != 0:
        steps.say("error: the demo installs onto a loop device, which needs root")
        return 1
    art = build(out, steps=steps)
    mib = 1 << 20
    steps.say(
        f"    in {art.out_dir}:\n"
        f"    metal image {art.raw.stat().st_size / mib:.0f} MiB "
        f"(xz {art.raw_xz.stat().st_size / mib:.1f} MiB, signed), "
        f"live ISO {art.iso.stat().st_size / mib:.1f} MiB, kernel {art.kernel_version}"
    )
    with serve(art.out_dir) as url, tempfile.TemporaryDirectory(prefix="nestos-demo-") as tmp:
        stream = art.write_stream(url)
        steps.say(f"==> serving {art.out_dir} at {url} (stream: {url}streams/{stream.name})")
        target = Path(tmp) / "disk.raw"
        with loop_disk(target, TARGET_SIZE) as dev:
            argv = install_argv(url, art, dev)
            steps.say(f"==> install onto {dev} (a 512 MiB sparse file) with the real installer:")
            steps.say("    nestos-installer " + " ".join(argv[3:]))
            start = time.monotonic()
            rc = subprocess.run(argv, check=False).returncode
            if rc != 0:
                steps.say(f"error: nestos-installer install exited with status {rc}")
                return 1
            steps.say(f"    done in {time.monotonic() - start:.1f}s")
        failed = False
        with steps.step(f"boot the installed disk in QEMU ({', '.join(firmwares)}; TCG, ~15 s)"):
            with ThreadPoolExecutor(max_workers=len(firmwares)) as pool:
                futures = [
                    (fw, pool.submit(qemu.boot, target, firmware=fw, kind="disk"))
                    for fw in firmwares
                ]
                for fw, fut in futures:
                    result = fut.result()
                    steps.say(f"\n--- {fw.upper()} boot ({result.seconds:.1f}s), serial console:")
                    block = f"{qemu.BEGIN}\n{result.markers}\n{qemu.END}"
                    steps.say(block if result.markers else "(no marker block)")
                    for problem in check_boot(result, art):
                        failed = True
                        steps.say(f"FAIL ({fw}): {problem}")
    total = time.monotonic() - t0
    if failed:
        steps.say(f"\nDemo FAILED after {total:.0f}s")
        return 1
    steps.say(
        f"\nDemo OK in {total:.0f}s: the installed disk booted with {' and '.join(firmwares)}"
        f", and its kernel saw {KARG} and the Ignition config."
    )
    return 0


def main_run(out: Optional[Path], firmwares: Sequence[str]) -> int:
    steps = Steps()
    try:
        return run_demo(out, firmwares, steps)
    except (BuildError, qemu.BootError) as e:
        steps.say(f"error: {e}")
        return 1
