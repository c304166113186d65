"""`python -m nestos_demo run`: build the first-boot image, serve it over local HTTP, install it
with the real nestos-installer onto a loop disk, boot that disk with BIOS and UEFI, and log in
over SSH as the user the Ignition config made, with the key generated for the run.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from nestos_demo import ignition, qemu, ssh, vm
from nestos_demo.osimage import OsImage, build_os_image
from nestos_demo.util import BuildError, Steps, run

TARGET_SIZE = 768 << 20
KARG = "nestos.demo=1"
LOGIN_TIMEOUT = 600  # ~90 s on an idle machine; boots share 2 cores with whatever else runs


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


def install_argv(url: str, image: OsImage, config: Path, device: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "nestos_installer",
        "install",
        "--image-url",
        url + image.raw_zst.name,
        "--keyring",
        str(image.public_key),
        "--ignition-file",
        str(config),
        "--append-karg",
        KARG,
        device,
    ]


# What the login shows: one command per section, each announced with its `$ ` line.
LOGIN_COMMANDS = (
    "hostname",
    "grep -E '^(NAME|VERSION)=' /etc/os-release",
    "cat /proc/cmdline",
    f"ls -l {ignition.DEMO_FILE} && cat {ignition.DEMO_FILE}",
    f"cat {ignition.FIRSTBOOT_UNIT_OUTPUT}",
    "nmcli -t connection show --active",
)


def login_script() -> str:
    return "; ".join(f"echo {shlex.quote('$ ' + c)}; {c}" for c in LOGIN_COMMANDS)


def check_login(output: str) -> List[str]:
    """What is wrong with the login transcript (empty list: all good)."""
    sections: Dict[str, str] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("$ "):
            current = line[2:]
            sections[current] = ""
        else:
            sections[current] = sections.get(current, "") + line + "\n"
    got = [sections.get(c, "").strip() for c in LOGIN_COMMANDS]
    hostname, release, cmdline, demo_file, hello, nmcli = got
    problems = []
    if hostname != ignition.FIRSTBOOT_HOSTNAME:
        problems.append(f"hostname is {hostname!r}, the Ignition config says nestos-demo")
    if 'NAME="NestOS"' not in release:
        problems.append("/etc/os-release does not name NestOS")
    if KARG not in cmdline.split() or "ignition.firstboot" not in cmdline.split():
        problems.append(f"{KARG} or ignition.firstboot missing from the kernel command line")
    if ignition.DEMO_FILE_TEXT.strip() not in demo_file or "-rw-r-----" not in demo_file:
        problems.append(f"{ignition.DEMO_FILE} is missing or has the wrong mode")
    if ignition.FIRSTBOOT_UNIT not in hello:
        problems.append(f"the unit {ignition.FIRSTBOOT_UNIT} from the config did not run")
    if "802-3-ethernet" not in nmcli:
        problems.append("NetworkManager has no active ethernet connection")
    return problems


def boot_and_login(disk: Path, firmware: str, key: ssh.KeyPair, tmp: Path) -> Tuple[str, float]:
    """Boot `disk`, log in as the Ignition user with `key`; the transcript and boot-to-SSH s."""
    with vm.running(disk, firmware=firmware, serial_log=tmp / f"serial-{firmware}.log") as guest:
        login = ssh.Login(guest.ssh_port, ignition.FIRSTBOOT_USER, key, tmp / f"kh-{firmware}")
        try:
            seconds = ssh.wait_for_login(login, LOGIN_TIMEOUT, alive=guest.alive)
        except ssh.SshError as e:
            tail = "\n".join(guest.serial().splitlines()[-30:])
            raise BuildError(f"{firmware}: {e}\n{guest.qemu_errors()}{tail}") from e
        head = (
            f"--- {firmware.upper()}: ssh {login.user}@127.0.0.1 -p {login.port} "
            f"(key only) after {seconds:.0f}s of boot (QEMU CPU {guest.cpu_seconds():.0f}s)"
        )
        proc = login.run(login_script())
        return f"{head}\n{proc.stdout}{proc.stderr}", seconds


def install(url: str, image: OsImage, config: Path, target: Path, steps: Steps) -> None:
    with loop_disk(target, max(TARGET_SIZE, image.raw.stat().st_size + (64 << 20))) as dev:
        argv = install_argv(url, image, config, dev)
        steps.say(f"==> install onto {dev} (a sparse file) with the real installer:")
        steps.say("    nestos-installer " + " ".join(argv[3:]))
        start = time.monotonic()
        rc = subprocess.run(argv, check=False).returncode
        if rc != 0:
            raise BuildError(f"nestos-installer install exited with status {rc}")
        steps.say(f"    done in {time.monotonic() - start:.1f}s")


def run_demo(out: Optional[Path], firmwares: Sequence[str], steps: Steps) -> int:
    """The whole demo; returns the process exit status."""
    t0 = time.monotonic()
    steps.say("NestOS installer demo: build -> serve -> install -> boot -> SSH login\n")
    if os.geteuid() != 0:
        steps.say("error: the demo builds a Debian root and installs onto a loop device: root only")
        return 1
    image = build_os_image(out, steps=steps)
    mib = 1 << 20
    steps.say(
        f"    in {image.out_dir}: metal image {image.raw.stat().st_size / mib:.0f} MiB "
        f"(zstd {image.raw_zst.stat().st_size / mib:.0f} MiB, signed), "
        f"kernel {image.kernel_version}"
    )
    with serve(image.out_dir) as url, tempfile.TemporaryDirectory(prefix="nestos-demo-") as tmp:
        work = Path(tmp)
        key = ssh.generate_key(work / "key", "demo@nestos-installer")
        config = ignition.write_config(work / "demo.ign", ignition.firstboot_config(key.public))
        steps.say(
            f"==> Ignition config {config.name}: user core (the key made for this run), "
            "hostname, a file, a unit"
        )
        steps.say(f"==> serving {image.out_dir} at {url}")
        disks = {fw: work / f"disk-{fw}.raw" for fw in firmwares}
        install(url, image, config, disks[firmwares[0]], steps)
        for fw in firmwares[1:]:  # each firmware boots its own copy for the first time
            run(["cp", "--sparse=always", disks[firmwares[0]], disks[fw]])
        failed = _boot_all(disks, key, work, steps)
    total = time.monotonic() - t0
    if failed:
        steps.say(f"\nDemo FAILED after {total:.0f}s")
        return 1
    steps.say(
        f"\nDemo OK in {total:.0f}s: the installed disk booted with {' and '.join(firmwares)}, "
        "Ignition applied the config, and the Ignition user logged in over SSH."
    )
    return 0


def _boot_all(disks: Dict[str, Path], key: ssh.KeyPair, work: Path, steps: Steps) -> bool:
    """Boot every firmware's disk at once; print each login; True if anything failed."""
    failed = False
    with steps.step(f"boot the installed disk in QEMU ({', '.join(disks)}; TCG) and log in"):
        with ThreadPoolExecutor(max_workers=len(disks)) as pool:
            futures = {fw: pool.submit(boot_and_login, d, fw, key, work) for fw, d in disks.items()}
            for fw, fut in futures.items():
                try:
                    transcript, _ = fut.result()
                except BuildError as e:
                    steps.say(f"FAIL ({fw}): {e}")
                    failed = True
                    continue
                steps.say("\n" + transcript)
                for problem in check_login(transcript):
                    failed = True
                    steps.say(f"FAIL ({fw}): {problem}")
    return failed


def main_run(out: Optional[Path], firmwares: Sequence[str]) -> int:
    steps = Steps()
    try:
        return run_demo(out, firmwares, steps)
    except (BuildError, qemu.BootError, ssh.SshError) as e:
        steps.say(f"error: {e}")
        return 1
