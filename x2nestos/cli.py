"""Command-line front end of x2nestos (argparse: the zipapp must run without click).

Turns flags into a frozen ConvertConfig, calls one function, prints results and errors
(`Error:` line, `Caused by:` chain, `hint:`). The only x2nestos module that prints or exits.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, TextIO

from nestos_installer.errors import ConfigError, UsageError
from nestos_installer.report import report
from x2nestos import __version__, deadman
from x2nestos.convert import convert, unload
from x2nestos.initramfs import Compression
from x2nestos.network import NetworkMode
from x2nestos.phases import Phase, Tracker
from x2nestos.plan import DEFAULT_CARRY, DEFAULT_WORK_DIR, Carry, ConvertConfig, Plan, build_plan
from x2nestos.remote import (
    DEFAULT_TIMEOUT,
    RemoteOptions,
    convert_remote,
    plan_remote,
    unload_remote,
)
from x2nestos.ssh import SshTarget

STDIN_LIMIT = 64 << 20  # bytes of an Ignition config read from stdin (`-i -`)


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
        help="Ignition config for the installed system ('-': read it from stdin, e.g. "
        "piped from a secret store, so that it is never written to a file)",
    )
    dst.add_argument("-I", "--ignition-url", metavar="URL", help="fetch the Ignition config")
    dst.add_argument(
        "--ignition-hash", metavar="DIGEST", help="sha256-<hex> or sha512-<hex> of --ignition-url"
    )
    dst.add_argument(
        "--carry",
        metavar="LIST",
        help="hostname,ssh-keys,host-keys,network,console, all or none (default: "
        + ",".join(sorted(c.value for c in DEFAULT_CARRY))
        + "; all with --host)",
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


def _remote(p: argparse.ArgumentParser) -> None:
    grp = p.add_argument_group("another host, over SSH (x2nestos runs here, nothing on it)")
    grp.add_argument("--host", metavar="[USER@]HOST", help="the host to convert, over SSH")
    grp.add_argument("--port", type=int, metavar="N", help="its SSH port")
    grp.add_argument("--identity", type=Path, metavar="FILE", help="SSH private key to log in")
    grp.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="ssh -o option, e.g. ProxyJump=bastion (repeatable)",
    )
    grp.add_argument("--sudo", action="store_true", help="become root there with sudo -n")


def _convert_options(cv: argparse.ArgumentParser) -> None:
    cv.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cv.add_argument(
        "--stage-only",
        action="store_true",
        help="load the live kernel and stop (undo: x2nestos unload)",
    )
    cv.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    cv.add_argument("--json", action="store_true", help="one JSON object per phase, then a result")
    cv.add_argument("--no-wait", action="store_true", help="with --host: stop after the jump")
    cv.add_argument(
        "--install-kexec",
        action="store_true",
        help="with --host: install kexec-tools there if missing",
    )
    cv.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="with --host: limit of each phase after the jump (default: %(default).0f)",
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
        _remote(verbs[name])
    for name in ("doctor", "plan"):
        verbs[name].add_argument("--json", action="store_true", help="machine-readable output")
    _convert_options(verbs["convert"])
    un = sub.add_parser(
        "unload",
        formatter_class=_formatter,
        help="unload a staged kernel",
        description="Unload a kernel staged by convert --stage-only.",
    )
    un.add_argument("--work-dir", type=Path, metavar="DIR", help="staging dir to clean")
    _remote(un)
    return top


def target_from(args: argparse.Namespace) -> Optional[SshTarget]:
    """--host and its SSH options, or None (this host)."""
    if not args.host:
        for flag in ("port", "identity", "sudo"):
            if getattr(args, flag):
                raise UsageError(f"--{flag} needs --host")
        if args.ssh_option:
            raise UsageError("--ssh-option needs --host")
        return None
    if args.root != Path("/"):
        raise UsageError("--root and --host exclude each other")
    return SshTarget.parse(
        args.host,
        port=args.port,
        identity=args.identity,
        options=args.ssh_option,
        sudo=args.sudo,
    )


def read_stdin_config(limit: int = STDIN_LIMIT) -> bytes:
    """The Ignition config of `-i -`: all of stdin (bounded), never from a terminal."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "--ignition-file -: stdin is a terminal, not a config",
            hint="pipe the config in: ... -i - < config.ign",
        )
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"the Ignition config on stdin is larger than {limit >> 20} MiB")
    return data


def config_from(args: argparse.Namespace, remote: bool = False) -> ConvertConfig:
    kw: dict[str, Any] = {}
    ignition_file = args.ignition_file
    if ignition_file == Path("-"):
        ignition_file, kw["ignition_data"] = None, read_stdin_config()
    if args.stream_base_url:
        kw["stream_base_url"] = args.stream_base_url
    if args.carry is not None:
        kw["carry"] = Carry.parse(args.carry)
    elif remote:  # the converted host is checked by its carried key, login and hostname
        kw["carry"] = frozenset(Carry)
    return ConvertConfig(
        root=args.root,
        target=args.dest_device,
        iso=args.iso,
        pxe=args.pxe,
        stream=args.stream,
        keyrings=tuple(args.keyring),
        insecure=args.insecure,
        ignition_file=ignition_file,
        ignition_url=args.ignition_url,
        ignition_hash=args.ignition_hash,
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


def _confirm(plan: Plan, out: TextIO = sys.stdout) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("refusing to convert without confirmation", hint="pass --yes")
    t = plan.target
    where = plan.host.get("hostname") or "this host"
    print(
        f"\nThis ERASES {t.kernel_path if t else '?'} ({t.stable_path if t else '?'}) on "
        f"{where} and installs NestOS. It cannot be undone.",
        file=out,
    )
    print("Type 'yes' to continue: ", end="", file=out, flush=True)
    return sys.stdin.readline().strip() == "yes"


DOCTOR_KEYS = ("ok", "checks", "architecture", "kexec", "target", "artifacts", "host")


def report_plan(args: argparse.Namespace, cfg: ConvertConfig, target: Optional[SshTarget]) -> int:
    """doctor / plan, here or on --host: exit 0 when the host can be converted, else 1."""
    ssh: Optional[Dict[str, Any]] = None
    if target is not None:
        plan, ssh = plan_remote(cfg, target)
    else:
        plan = build_plan(cfg)
    if args.json:
        d = plan.to_json()
        if args.command == "doctor":
            d = {k: d[k] for k in DOCTOR_KEYS}
        if ssh is not None:
            d["ssh"] = ssh
        print(json.dumps(d, indent=2))
    elif args.command == "doctor":
        print_checks(plan)
    else:
        print_plan(plan)
    return 0 if plan.ok else 1


def human_event(event: Dict[str, Any]) -> None:
    """A phase event as one line for people (--json prints the objects themselves)."""
    if event["event"] == "log":
        print(f"  | {event['line']}", flush=True)
    elif event["event"] == "phase":
        status = "ok" if event["status"] == "ok" else "FAILED"
        text = event.get("reason") if event["status"] != "ok" else event.get("detail", "")
        print(f"{event['phase']:10} {status:6} {event['seconds']:7.1f}s  {text or ''}", flush=True)


def convert_tracked(
    args: argparse.Namespace, cfg: ConvertConfig, target: Optional[SshTarget]
) -> int:
    """convert with phases (always with --host, and with --json here): events as they come,
    then the result object; the exit code names the phase that failed."""
    emit = (lambda e: print(json.dumps(e), flush=True)) if args.json else human_event
    track = Tracker(emit, target.name if target else os.uname().nodename)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("refusing to convert without confirmation", hint="pass --yes")
    confirm = (
        None
        if args.yes
        else functools.partial(_confirm, out=sys.stderr if args.json else sys.stdout)
    )
    state: Optional[Phase] = None
    try:
        if target is not None:
            opts = RemoteOptions(target, args.install_kexec, not args.no_wait, args.timeout)
            state = convert_remote(cfg, opts, track, confirm=confirm, stage_only=args.stage_only)
        else:
            say = track.log if args.json else (lambda m: print(m, flush=True))
            out = convert(cfg, say=say, confirm=confirm, stage_only=args.stage_only, track=track)
            state = Phase.JUMPED if out.jumped else Phase.LOADED
    except BaseException as e:
        result = track.result(track.reached(), e)
        if args.json:
            print(json.dumps(result), flush=True)
        raise
    result = track.result(state)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"{result['host']}: {result['state']} in {result['seconds']:.0f}s")
    return 0


def run(args: argparse.Namespace) -> int:
    target = target_from(args)
    if args.command == "unload":
        ucfg = ConvertConfig(root=args.root, work_dir=args.work_dir)
        was = unload_remote(ucfg, target) if target is not None else unload(ucfg)
        print("unloaded the staged kernel" if was else "no kernel was staged")
        return 0
    cfg = config_from(args, remote=target is not None)
    if args.command in ("doctor", "plan"):
        return report_plan(args, cfg, target)
    if target is not None or args.json:
        if args.build_only:
            raise UsageError("--build-only is for local inspection (with --root), not --json")
        return convert_tracked(args, cfg, target)
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
