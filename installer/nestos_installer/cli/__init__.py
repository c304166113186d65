"""Command-line front end of nestos-installer (click).

The only package that imports click. Each command turns its flags into a frozen config, calls
one library function, prints the result, and leaves error reporting to `main()`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional

import click

from nestos_installer import __version__
from nestos_installer.errors import NestosError

CONTEXT_SETTINGS = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 80,
    "terminal_width": 80,
}


# Commands are imported when used: `install` need not pay for the ISO code at start-up.
_LAZY = {
    "install": ("install", "install_cmd"),
    "download": ("download", "download_cmd"),
    "list-stream": ("download", "list_stream_cmd"),
    "iso": ("iso", "iso_group"),
    "pxe": ("pxe", "pxe_group"),
    "dev": ("dev", "dev_group"),
    "autoinstall": ("autoinstall", "autoinstall_cmd"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use.

    `commands` (read by tests and the man page generator) loads them all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: Dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> Dict[str, click.Command]:
        for name in _LAZY:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: Dict[str, click.Command]) -> None:
        self._loaded = dict(value)

    def _load(self, name: str) -> Optional[click.Command]:
        if name not in self._loaded and name in _LAZY:
            module, attr = _LAZY[name]
            mod = importlib.import_module(f"nestos_installer.cli.{module}")
            self._loaded[name] = getattr(mod, attr)
        return self._loaded.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        return self._load(cmd_name)

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(self._loaded) | set(_LAZY))


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(
    __version__, "-V", "--version", prog_name="nestos-installer", message="%(prog)s %(version)s"
)
@click.option("--debug", is_flag=True, hidden=True, help="Show commands run and tracebacks.")
def cli(debug: bool) -> None:
    """Install NestOS to disk, fetch images and customize NestOS live media."""
    if debug:
        os.environ["NESTOS_INSTALLER_DEBUG"] = "1"
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def format_error(err: BaseException) -> List[str]:
    """`Error: msg`, then a `Caused by:` list from the __cause__ chain, then `hint:`."""
    lines = [f"Error: {err}"]
    causes = []
    cur: Optional[BaseException] = err.__cause__
    seen = {id(err)}
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur) or type(cur).__name__
        causes.append(text)
        cur = cur.__cause__
    if causes:
        lines.append("")
        lines.append("Caused by:")
        for i, c in enumerate(causes):
            lines.append(f"    {i}: {c}" if len(causes) > 1 else f"    {c}")
    hint = getattr(err, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def report_and_exit(err: BaseException) -> NoReturn:
    if os.environ.get("NESTOS_INSTALLER_DEBUG"):
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)
    for line in format_error(err):
        click.echo(line, err=True)
    code = getattr(err, "exit_code", 1)
    sys.exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        cli.main(args=argv, prog_name="nestos-installer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into e.g. `head`: exit quietly like coreos-installer does on SIGPIPE.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        finally:
            sys.exit(0)
    except NestosError as e:
        report_and_exit(e)
    except OSError as e:
        report_and_exit(e)
    sys.exit(0)
