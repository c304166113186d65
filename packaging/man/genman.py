"""Generate section-8 man pages for every nestos-installer (click) and x2nestos (argparse)
command and subcommand. Build-time only: python packaging/man/genman.py OUTDIR
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import click

from nestos_installer import __version__
from nestos_installer.cli import cli as installer_cli
from x2nestos.cli import parser as x2nestos_parser

SOURCE = f"nestos-installer {__version__}"
MANUAL = "System Administration"


def _esc(text: str) -> str:
    """Escape text for roff: backslashes, and leading dots/quotes on a line."""
    out = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return when.strftime("%Y-%m-%d")


def _page(
    name: str,
    summary: str,
    synopsis: str,
    description: str,
    options: List[Tuple[str, str]],
    subcommands: List[Tuple[str, str]],
    see_also: List[str],
) -> str:
    lines = [
        f'.TH "{name.upper()}" "8" "{_date()}" "{SOURCE}" "{MANUAL}"',
        ".SH NAME",
        f"{_esc(name)} \\- {_esc(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        _esc(synopsis),
        ".fi",
    ]
    if description:
        lines += [".SH DESCRIPTION"]
        for para in description.strip().split("\n\n"):
            if para.startswith("\b\n"):  # click's "do not rewrap" marker
                lines += [".PP", ".nf", _esc(para[2:]), ".fi"]
            else:
                lines += [".PP", _esc(" ".join(para.split()))]
    if options:
        lines.append(".SH OPTIONS")
        for flags, text in options:
            lines += [".TP", f"\\fB{_esc(flags)}\\fR", _esc(text or "")]
    if subcommands:
        lines.append(".SH SUBCOMMANDS")
        for sub, text in subcommands:
            lines += [".TP", f"\\fB{_esc(sub)}\\fR", _esc(text or "")]
    if see_also:
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{_esc(s)}\\fR(8)" for s in see_also)]
    return "\n".join(lines) + "\n"


def _click_pages(
    cmd: click.Command, path: List[str], parent: Optional[click.Context]
) -> Iterator[Tuple[str, str]]:
    name = " ".join(path)
    ctx = click.Context(cmd, info_name=path[-1], parent=parent)
    options = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            options.append(record)
    subs: List[Tuple[str, str]] = []
    children: List[Tuple[str, click.Command]] = []
    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            child = cmd.get_command(ctx, sub)
            if child is None or child.hidden:
                continue
            subs.append((sub, child.get_short_help_str(limit=200)))
            children.append((sub, child))
    pieces = cmd.collect_usage_pieces(ctx)
    synopsis = f"{name} {' '.join(pieces)}".strip()
    summary = cmd.get_short_help_str(limit=200) or name
    see = ["-".join(path[:-1])] if len(path) > 1 else []
    see += ["-".join([*path, s]) for s, _ in subs]
    yield (
        "-".join(path),
        _page("-".join(path), summary, synopsis, cmd.help or "", options, subs, see),
    )
    for sub, child in children:
        yield from _click_pages(child, [*path, sub], ctx)


def _argparse_pages(parser: argparse.ArgumentParser, path: List[str]) -> Iterator[Tuple[str, str]]:
    options = []
    subs: List[Tuple[str, str]] = []
    children: List[Tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for sub, child in action.choices.items():
                subs.append((sub, helps.get(sub, "")))
                children.append((sub, child))
            continue
        if action.help == argparse.SUPPRESS:
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else None
        flags = ", ".join(action.option_strings) or (metavar or action.dest)
        if action.option_strings and action.nargs != 0:
            flags += f" {metavar or action.dest.upper()}"
        options.append((flags, action.help or ""))
    parser.prog = " ".join(path)
    synopsis = parser.format_usage().replace("usage: ", "", 1).strip()
    summary = (parser.description or "").strip().split("\n")[0] or " ".join(path)
    see = ["-".join(path[:-1])] if len(path) > 1 else []
    see += ["-".join([*path, s]) for s, _ in subs]
    yield (
        "-".join(path),
        _page("-".join(path), summary, synopsis, parser.description or "", options, subs, see),
    )
    for sub, child in children:
        yield from _argparse_pages(child, [*path, sub])


def all_pages() -> Iterator[Tuple[str, str]]:
    """(page name without section, roff text) for every command of both tools."""
    yield from _click_pages(installer_cli, ["nestos-installer"], None)
    yield from _argparse_pages(x2nestos_parser(), ["x2nestos"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir", type=Path)
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name, text in all_pages():
        (args.outdir / f"{name}.8").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
