"""CLI: hidden `dev` subcommands (show iso/initrd, extract initrd) for developers and tests.

Turns flags into calls of `nestos_installer.live.isoops`; prints results, member names with
backslash escapes for bytes that are not printable UTF-8.
"""

from __future__ import annotations

import json
import sys
from typing import Optional, Tuple

import click

from nestos_installer.cli.iso import CTX
from nestos_installer.cpio import printable
from nestos_installer.errors import UsageError
from nestos_installer.live import isoops
from nestos_installer.live.initrd import glob_match


@click.group("dev", hidden=True, context_settings=CTX)
def dev_group() -> None:
    """Commands for developers."""


@dev_group.group("show", context_settings=CTX)
def show_group() -> None:
    """Print internal data structures."""


@show_group.command("iso", context_settings=CTX)
@click.option("--ignition", is_flag=True, help="Show Ignition embed area.")
@click.option("--kargs", is_flag=True, help="Show kargs embed areas.")
@click.argument("iso", type=click.Path(exists=True, dir_okay=False))
def show_iso(ignition: bool, kargs: bool, iso: str) -> None:
    """Show ISO9660 records and embed areas."""
    if ignition and kargs:
        raise UsageError("--ignition and --kargs are mutually exclusive")
    what = "ignition" if ignition else "kargs" if kargs else None
    click.echo(json.dumps(isoops.dev_show_iso(iso, what), indent=2))


@show_group.command("initrd", context_settings=CTX)
@click.argument("initrd")
@click.argument("globs", nargs=-1)
def show_initrd(initrd: str, globs: Tuple[str, ...]) -> None:
    """List the regular files of an initrd (`-` for stdin)."""
    archive = isoops.read_initrd_file(initrd, sys.stdin.buffer)
    for p in archive.paths():
        if glob_match(p, globs):
            click.echo(printable(p))


@dev_group.group("extract", context_settings=CTX)
def extract_group() -> None:
    """Extract data from containers."""


@extract_group.command("initrd", context_settings=CTX)
@click.option(
    "-C", "--directory", metavar="DIR", default=".", show_default=True, help="Output directory."
)
@click.option("-v", "--verbose", is_flag=True, help="Print extracted paths.")
@click.argument("initrd")
@click.argument("globs", nargs=-1)
def extract_initrd(
    directory: Optional[str], verbose: bool, initrd: str, globs: Tuple[str, ...]
) -> None:
    """Extract regular files from an initrd (`-` for stdin)."""
    archive = isoops.read_initrd_file(initrd, sys.stdin.buffer)
    for p in isoops.dev_extract_initrd(archive, directory or ".", globs):
        if verbose:
            click.echo(printable(p))
