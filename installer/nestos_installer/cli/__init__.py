"""Command-line front end of nestos-installer (click).

The only package that imports click. Each command turns its flags into a frozen config, calls
one library function, prints the result, and leaves error reporting to `main()`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional

import click

from nestos_installer import __version__
from nestos_installer.report import report

CONTEXT_SETTINGS = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 80,
    "terminal_width": 80,
}


# Commands are imported when used: `install` need not pay for the ISO code at start-up.
def _install() -> click.Command:
    from nestos_installer.cli.install import install_cmd

    return install_cmd


def _download() -> click.Command:
    from nestos_installer.cli.download import download_cmd

    return download_cmd


def _list_stream() -> click.Command:
    from nestos_installer.cli.download import list_stream_cmd

    return list_stream_cmd


def _iso() -> click.Command:
    from nestos_installer.cli.iso import iso_group

    return iso_group


def _pxe() -> click.Command:
    from nestos_installer.cli.pxe import pxe_group

    return pxe_group


def _dev() -> click.Command:
    from nestos_installer.cli.dev import dev_group

    return dev_group


def _autoinstall() -> click.Command:
    from nestos_installer.cli.autoinstall import autoinstall_cmd

    return autoinstall_cmd


def _deadman_watch() -> click.Command:
    from nestos_installer.cli.deadman import deadman_watch_cmd

    return deadman_watch_cmd


_LAZY: Dict[str, Callable[[], click.Command]] = {
    "install": _install,
    "download": _download,
    "list-stream": _list_stream,
    "iso": _iso,
    "pxe": _pxe,
    "dev": _dev,
    "autoinstall": _autoinstall,
    "deadman-watch": _deadman_watch,
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
            self._loaded[name] = _LAZY[name]()
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


def report_and_exit(err: BaseException) -> NoReturn:
    sys.exit(report(err, sys.stderr, debug=bool(os.environ.get("NESTOS_INSTALLER_DEBUG"))))


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
    except Exception as e:  # every error becomes the one-line report, never a traceback
        report_and_exit(e)
    sys.exit(0)
