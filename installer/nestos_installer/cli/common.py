"""Shared click option types and helpers for the command modules.

Imports click and library modules; nothing imports this but `cli/`.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import click

PROGRESS_CHOICES = click.Choice(["auto", "bar", "plain", "json", "none"])


def progress_option(f: Any) -> Any:
    return click.option(
        "--progress",
        type=PROGRESS_CHOICES,
        default="auto",
        show_default=True,
        help="Progress display: a bar on a TTY, plain lines, JSON lines, or none.",
    )(f)


keyfile_option = click.option(
    "-k",
    "--keyfile",
    "keyfiles",
    metavar="PATH",
    multiple=True,
    required=True,
    help="NetworkManager keyfile to embed.",
)


def refuse_tty_stdout() -> None:
    """Binary output to a terminal is refused (as coreos-installer does)."""
    if sys.stdout.isatty():
        raise click.ClickException("Refusing to write binary data to terminal")


def echo_err(msg: str, nl: bool = True) -> None:
    click.echo(msg, err=True, nl=nl)


def maybe(value: Optional[str]) -> Optional[str]:
    return value if value else None
