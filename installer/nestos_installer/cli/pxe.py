"""CLI: `pxe` subcommands (Ignition/network wrap and unwrap, customize).

Turns flags into calls of `nestos_installer.live.pxeops` / `customize`; prints results.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple

import click

from nestos_installer.cli.common import echo_err, keyfile_option, refuse_tty_stdout
from nestos_installer.cli.iso import CTX, _print_network, _read_input, customize_options
from nestos_installer.live import customize as cust
from nestos_installer.live import pxeops

_customize_options: Callable[[Any], Any] = customize_options


@click.group("pxe", context_settings=CTX)
def pxe_group() -> None:
    """Commands to manage NestOS live PXE boot images."""


def _stdout_for(output: str) -> Any:
    if output == "-":
        refuse_tty_stdout()
        return sys.stdout.buffer
    return None


@pxe_group.command("customize", context_settings=CTX)
@_customize_options
@click.option("-o", "--output", metavar="PATH", required=True, help="Output file ('-' for stdout).")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def pxe_customize(path: str, output: str, **kw: Any) -> None:
    """Create a custom live PXE boot config."""
    opts = cust.CustomizeOptions.from_cli(kw)
    stdout = _stdout_for(output)
    res = cust.customize_pxe(path, opts, output, stdout)
    for msg in res.messages:
        echo_err(msg)


@pxe_group.group("ignition", context_settings=CTX)
def ignition_group() -> None:
    """Commands to manage a live PXE Ignition config."""


@ignition_group.command("wrap", context_settings=CTX)
@click.option(
    "-i", "--ignition-file", metavar="PATH", help="Ignition config to wrap [default: stdin]."
)
@click.option("-o", "--output", metavar="PATH", default="-", help="Output file [default: stdout].")
def ignition_wrap(ignition_file: Optional[str], output: str) -> None:
    """Wrap an Ignition config in an initrd image."""
    stdout = _stdout_for(output)
    pxeops.ignition_wrap(_read_input(ignition_file), output, stdout)


@ignition_group.command("unwrap", context_settings=CTX)
@click.argument("initrd", default="-", metavar="[INITRD]")
def ignition_unwrap(initrd: str) -> None:
    """Show the wrapped Ignition config in an initrd image."""
    sys.stdout.buffer.write(pxeops.ignition_unwrap(initrd, sys.stdin.buffer))
    sys.stdout.flush()


@pxe_group.group("network", context_settings=CTX)
def network_group() -> None:
    """Commands to manage live PXE network settings."""


@network_group.command("wrap", context_settings=CTX)
@keyfile_option
@click.option("-o", "--output", metavar="PATH", default="-", help="Output file [default: stdout].")
def network_wrap(keyfiles: Tuple[str, ...], output: str) -> None:
    """Wrap network settings in an initrd image."""
    stdout = _stdout_for(output)
    pxeops.network_wrap(keyfiles, output, stdout)


@network_group.command("unwrap", context_settings=CTX)
@click.option("-C", "--directory", metavar="DIR", help="Extract to directory.")
@click.argument("initrd", default="-", metavar="[INITRD]")
def network_unwrap(directory: Optional[str], initrd: str) -> None:
    """Extract wrapped network settings from an initrd image."""
    _print_network(pxeops.network_unwrap(initrd, directory, sys.stdin.buffer))
