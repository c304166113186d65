"""Command-line front end of x2nestos (argparse: the zipapp must run without click).

Turns flags into a frozen ConvertConfig, calls one function, prints results and errors
(`Error:` line, `Caused by:` chain, `hint:`). The only x2nestos module that prints or exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, List, NoReturn, Optional

from nestos_installer.errors import UsageError
from nestos_installer.report import report
from x2nestos import __version__, deadman
from x2nestos.convert import convert, unload
from x2nestos.initramfs import Compression
from x2nestos.network import NetworkMode
from x2nestos.plan import DEFAULT_CARRY, DEFAULT_WORK_DIR, Carry, ConvertConfig, Plan, build_plan


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=80, max_help_position=30)


def _common(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("live artifacts (one of)")
    src.add_argument("--iso", type=Path, metavar="FILE", help="NestOS live ISO")
    src.add_argument(
        "--pxe", type=Path, metavar="DIR", help="directory with the live kernel, initramfs, rootfs"
    )
    src.add_argument("--stream", metavar="NAME", help="download from a stream, e.g. 2403-LTS")
    src.add_argument("--stream-base-url", metavar="URL", help=argparse.SUPPRESS)
    src.add_argument(
        "--keyring",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="trusted signing key (repeatable)",
    )
    src.add_argument("--insecure", action="store_true", help="allow artifacts without a signature")
    _destination(p.add_argument_group("destination"))
    _staging(p.add_argument_group("live environment and staging"))


def _destination(dst: Any) -> None:
    dst.add_argument(
        "-d", "--dest-device", metavar="DEV", help="target disk (default: the disk holding /)"
    )
    dst.add_argument(
        "-i",
        "--ignition-file",
        type=Path,
        metavar="FILE",
        help="Ignition config for the installed system",
    )
    dst.add_argument("-I", "--ignition-url", metavar="URL", help="fetch the Ignition config")
    dst.add_argument(
        "--ignition-hash", metavar="DIGEST", help="sha256-<hex> or sha512-<hex> of --ignition-url"
    )
    dst.add_argument(
        "--carry",
        default=",".join(sorted(c.value for c in DEFAULT_CARRY)),
        metavar="LIST",
        help="hostname,ssh-keys,host-keys,network,console, all or none (default: %(default)s)",
    )
    dst.add_argument(
        "--network",
        choices=[m.value for m in NetworkMode],
        default=NetworkMode.CARRY.value,
        help="carry this host's network, or use DHCP on every interface (default: carry)",
    )
    dst.add_argument(
        "--save-partlabel",
        action="append",
        default=[],
        metavar="GLOB",
        help="keep partitions with these labels",
    )
    dst.add_argument(
        "--dest-karg",
        action="append",
        default=[],
        metavar="ARG",
        help="kernel argument for the installed system",
    )
    dst.add_argument(
        "--force-unmounted-data",
        action="store_true",
        help="allow losing mounted data filesystems on the target",
    )


def _staging(dst: Any) -> None:
    dst.add_argument(
        "--deadline",
        default=str(deadman.DEFAULT_DEADLINE),
        metavar="DURATION",
        help="reboot into this system unless the live installer starts writing within "
        "DURATION (600, 90s, 10m, 1h; default: %(default)s s)",
    )
    dst.add_argument(
        "--live-karg",
        action="append",
        default=[],
        metavar="ARG",
        help="kernel argument for the live environment",
    )
    dst.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help=f"disk-backed staging dir (default: {DEFAULT_WORK_DIR})",
    )
    dst.add_argument(
        "--compression",
        choices=[c.value for c in Compression.stdlib_codecs()],
        default="gzip",
        help="appended archive compression (default: gzip)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="x2nestos",
        formatter_class=_formatter,
        description="Convert this running Linux host to NestOS: boot the NestOS live system "
        "with kexec and let it install onto this host's disk.",
    )
    top.add_argument("-V", "--version", action="version", version=f"x2nestos {__version__}")
    top.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    top.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    verbs = {}
    for name, help_text, description in (
        (
            "doctor",
            "check whether this host can be converted",
            "Check whether this host can be converted; exits non-zero if not.",
        ),
        ("plan", "show what convert would do", "Show everything convert would do; change nothing."),
        ("convert", "convert this host", "Check, stage the live system with kexec, confirm, jump."),
    ):
        verbs[name] = sub.add_parser(
            name, formatter_class=_formatter, help=help_text, description=description
        )
        _common(verbs[name])
    for name in ("doctor", "plan"):
        verbs[name].add_argument("--json", action="store_true", help="machine-readable output")
    cv = verbs["convert"]
    cv.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cv.add_argument(
        "--stage-only",
        action="store_true",
        help="load the live kernel and stop (undo: x2nestos unload)",
    )
    cv.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    un = sub.add_parser(
        "unload",
        formatter_class=_formatter,
        help="unload a staged kernel",
        description="Unload a kernel staged by convert --stage-only.",
    )
    un.add_argument("--work-dir", type=Path, metavar="DIR", help="staging dir to clean")
    return top


def config_from(args: argparse.Namespace) -> ConvertConfig:
    kw: dict[str, Any] = {}
    if args.stream_base_url:
        kw["stream_base_url"] = args.stream_base_url
    return ConvertConfig(
        root=args.root,
        target=args.dest_device,
        iso=args.iso,
        pxe=args.pxe,
        stream=args.stream,
        keyrings=tuple(args.keyring),
        insecure=args.insecure,
        ignition_file=args.ignition_file,
        ignition_url=args.ignition_url,
        ignition_hash=args.ignition_hash,
        carry=Carry.parse(args.carry),
        save_partlabel=tuple(args.save_partlabel),
        live_kargs=tuple(args.live_karg),
        dest_kargs=tuple(args.dest_karg),
        work_dir=args.work_dir,
        compression=Compression(args.compression),
        force_unmounted_data=args.force_unmounted_data,
        network_mode=NetworkMode(args.network),
        deadline=deadman.parse_duration(args.deadline),
        **kw,
    )


def print_checks(plan: Plan) -> None:
    width = max(len(c.name) for c in plan.checks)
    for c in plan.checks:
        print(f"{c.status.value.upper():5} {c.name:{width}}  {c.detail}")
    print("\nverdict: " + ("this host can be converted" if plan.ok else "NOT convertible"))


def print_plan(plan: Plan) -> None:
    d = plan.to_json()
    print("== checks")
    print_checks(plan)
    print("\n== target")
    t = plan.target
    print(f"{t.kernel_path} -> {t.stable_path} ({t.size} bytes)" if t else "none")
    print("\n== live artifacts")
    if plan.artifacts:
        for n, p in plan.artifacts.parts.items():
            print(f"{n:10} {p.size:>12}  {p.origin}")
        art = plan.artifacts
        print(f"live image: {art.prefix}.inst.* / /etc/{art.prefix} ({art.prefix_source})")
        sigs = "next to the ISO/PXE files (.sig), checked by convert"
        print("signatures: " + ("NOT required (--insecure)" if plan.config.insecure else sigs))
    print("\n== kernel command line (live)")
    print(plan.cmdline)
    print("\n== installer config (/etc/nestos/installer.d/0000-x2nestos.yaml)")
    print(json.dumps(d["installer-config"], indent=2))
    print("\n== destination Ignition (secrets elided)")
    print(json.dumps(d["destination-ignition"], indent=2))
    for name, text in d["network-keyfiles"].items():
        print(f"\n== network keyfile {name}")
        print(text, end="")
    print("\n== network on NestOS")
    print("\n".join(f"  {i.line()}" for i in plan.interfaces) or "  no interface")
    print("\n== carried")
    print("\n".join(f"  {c}" for c in plan.carried) or "  nothing")
    print("\n== NOT carried")
    print("\n".join(f"  {c}" for c in plan.not_carried) or "  nothing")
    if plan.notes:
        print("\n== notes")
        print("\n".join(f"  {c}" for c in plan.notes))
    print("\n== if the live environment fails")
    print("\n".join(deadman.policy_lines(plan.config.deadline)))


def _confirm(plan: Plan) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("refusing to convert without confirmation", hint="pass --yes")
    t = plan.target
    print(
        f"\nThis ERASES {t.kernel_path if t else '?'} ({t.stable_path if t else '?'}) and "
        "installs NestOS. It cannot be undone."
    )
    return input("Type 'yes' to continue: ").strip() == "yes"


def run(args: argparse.Namespace) -> int:
    if args.command == "unload":
        was = unload(ConvertConfig(root=args.root, work_dir=args.work_dir))
        print("unloaded the staged kernel" if was else "no kernel was staged")
        return 0
    cfg = config_from(args)
    if args.command in ("doctor", "plan"):
        plan = build_plan(cfg)
        if args.json:
            d = plan.to_json()
            if args.command == "doctor":
                d = {
                    k: d[k]
                    for k in ("ok", "checks", "architecture", "kexec", "target", "artifacts")
                }
            print(json.dumps(d, indent=2))
        elif args.command == "doctor":
            print_checks(plan)
        else:
            print_plan(plan)
        return 0 if plan.ok else 1
    out = convert(
        cfg,
        say=lambda m: print(m, flush=True),
        confirm=None if args.yes else _confirm,
        stage_only=args.stage_only,
        build_only=args.build_only,
    )
    if out.plan.notes:
        print("\n".join(f"note: {n}" for n in out.plan.notes))
    return 0


def main(argv: Optional[List[str]] = None) -> NoReturn:
    args = parser().parse_args(argv)
    if args.debug:
        os.environ["X2NESTOS_DEBUG"] = "1"
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    if not args.command:
        parser().print_help()
        sys.exit(2)
    try:
        code = run(args)
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - output piped into e.g. `head`
        sys.exit(0)
    except Exception as e:  # every error becomes the one-line report, never a traceback
        sys.exit(report(e, sys.stderr, debug=args.debug))
    sys.exit(code)
