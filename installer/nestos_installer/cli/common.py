"""Shared click option types and helpers for the command modules.

Imports click and library modules; nothing imports this but `cli/`.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import click

PROGRESS_CHOICES = click.Choice(["auto", "bar", "plain", "json", "none"])


def utf8(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback for a value that goes into a URL, JSON or YAML text: refused unless valid
    UTF-8 (click hands non-UTF-8 arguments over with lone surrogates)."""
    from nestos_installer.errors import UsageError
    from nestos_installer.untrusted import require_utf8

    for item in value if isinstance(value, (tuple, list)) else [value]:
        if isinstance(item, str):
            try:
                require_utf8(item, "value")
            except UsageError as e:
                raise click.BadParameter(str(e), ctx, param) from None
    return value


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
