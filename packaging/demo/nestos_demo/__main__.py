"""Command line of the demo: `python -m nestos_demo build|build-os|run|boot`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from nestos_demo import qemu
from nestos_demo.build import build
from nestos_demo.demo import main_run
from nestos_demo.osimage import build_os_image
from nestos_demo.util import BuildError, Steps


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nestos_demo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the demo image, live ISO, PXE files and stream")
    b.add_argument("--out", type=Path, help="output directory (default: in the cache)")
    b.add_argument("--base-url", help="also write streams/demo.json for this base URL")
    bo = sub.add_parser("build-os", help="build the first-boot image (Debian, Ignition; root)")
    bo.add_argument("--out", type=Path, help="output directory (default: in the cache)")
    r = sub.add_parser(
        "run", help="build, serve, install onto a loop disk, boot it in QEMU, log in over SSH"
    )
    r.add_argument("--out", type=Path, help="output directory (default: in the cache)")
    r.add_argument("--firmware", default="bios,uefi", help="comma-separated: bios,uefi")
    bt = sub.add_parser("boot", help="boot a disk image or ISO and print the marker block")
    bt.add_argument("media", type=Path)
    bt.add_argument("--firmware", choices=qemu.FIRMWARES, default="bios")
    bt.add_argument("--timeout", type=float, default=180)
    args = p.parse_args(argv)
    if args.cmd == "run":
        fws = [f for f in args.firmware.split(",") if f]
        if not fws or any(f not in qemu.FIRMWARES for f in fws):
            p.error("--firmware takes bios, uefi or bios,uefi")
        return main_run(args.out, fws)
    steps = Steps()
    try:
        if args.cmd == "build":
            art = build(args.out, steps=steps)
            if args.base_url:
                steps.say(f"stream: {art.write_stream(args.base_url)}")
            steps.say(f"artifacts in {art.out_dir}")
            return 0
        if args.cmd == "build-os":
            image = build_os_image(args.out, steps=steps)
            steps.say(f"first-boot image in {image.out_dir}")
            return 0
        kind = "cdrom" if args.media.read_bytes()[0x8001:0x8006] == b"CD001" else "disk"
        res = qemu.boot(args.media, firmware=args.firmware, kind=kind, timeout=args.timeout)
        steps.say(res.markers if res.markers else res.describe())
        return 0 if res.ok else 1
    except (BuildError, qemu.BootError, OSError) as e:
        steps.say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
