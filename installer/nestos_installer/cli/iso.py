"""CLI: `iso` subcommands (Ignition, network, kargs, customize, reset, extract).

Turns flags into calls of `nestos_installer.live.isoops` / `customize`; prints results.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO, Optional, Tuple

import click

from nestos_installer import untrusted
from nestos_installer.cli.common import echo_err, keyfile_option, refuse_tty_stdout, utf8
from nestos_installer.cpio import printable
from nestos_installer.errors import NestosError
from nestos_installer.live import customize as cust
from nestos_installer.live import isoops, miniso

CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


def _out(output: Optional[str]) -> Optional[BinaryIO]:
    if output == "-":
        refuse_tty_stdout()
        return sys.stdout.buffer
    return None


def output_option(f: Any) -> Any:
    return click.option(
        "-o", "--output", metavar="PATH", help="Write ISO to a new output file ('-' for stdout)."
    )(f)


def customize_options(f: Any) -> Any:
    """Options shared by `iso customize` and `pxe customize` (spec §6.1)."""
    opts = [
        ("--dest-ignition", "PATH", "Ignition config for the destination system."),
        ("--dest-console", "SPEC", "Kernel and bootloader console for the destination."),
        ("--dest-karg-append", "ARG", "Destination kernel argument to append."),
        ("--dest-karg-delete", "ARG", "Destination kernel argument to delete."),
        ("--network-keyfile", "PATH", "NetworkManager keyfile for live & dest."),
        ("--network-nmstate", "PATH", "nmstate config for live & dest."),
        ("--ignition-ca", "PATH", "CA certificate bundle for Ignition (PEM)."),
        ("--pre-install", "PATH", "Script to run before installation."),
        ("--post-install", "PATH", "Script to run after installation."),
        ("--installer-config", "PATH", "Installer config file."),
        ("--live-ignition", "PATH", "Ignition config fragment for the live system."),
    ]
    for name, metavar, text in reversed(opts):
        check = utf8 if metavar in ("SPEC", "ARG") else None  # they go into YAML
        f = click.option(name, metavar=metavar, multiple=True, callback=check, help=text)(f)
    return click.option(
        "--dest-device", metavar="PATH", callback=utf8, help="Install destination device."
    )(f)


def iso_arg(f: Any) -> Any:
    return click.argument("iso", type=click.Path(exists=True, dir_okay=False))(f)


def _read_input(path: Optional[str]) -> bytes:
    """The Ignition config to embed or wrap (a file, or stdin), with the cap of a URL fetch."""
    limit = untrusted.IGNITION_MAX
    if path is None or path == "-":
        data: bytes = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            raise NestosError(
                f"reading Ignition config from stdin: larger than {untrusted.size_text(limit)}"
            )
        return data
    return untrusted.read_file(path, "Ignition config", limit=limit, error=NestosError)


@click.group("iso", context_settings=CTX)
def iso_group() -> None:
    """Commands to manage a NestOS live ISO image."""


# ---- ignition --------------------------------------------------------------------------------
@iso_group.group("ignition", context_settings=CTX)
def ignition_group() -> None:
    """Embed an Ignition config in an ISO image."""


def _embed(iso: str, ignition_file: Optional[str], force: bool, output: Optional[str]) -> None:
    stdout = _out(output)
    isoops.ignition_embed(iso, _read_input(ignition_file), force, output, stdout)


@ignition_group.command("embed", context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing Ignition config.")
@click.option(
    "-i", "--ignition-file", metavar="PATH", help="Ignition config to embed [default: stdin]."
)
@output_option
@iso_arg
def ignition_embed(
    force: bool, ignition_file: Optional[str], output: Optional[str], iso: str
) -> None:
    """Embed an Ignition config in an ISO image."""
    _embed(iso, ignition_file, force, output)


@ignition_group.command("show", context_settings=CTX)
@iso_arg
def ignition_show(iso: str) -> None:
    """Show the embedded Ignition config from an ISO image."""
    data = isoops.ignition_show(iso)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@ignition_group.command("remove", context_settings=CTX)
@output_option
@iso_arg
def ignition_remove(output: Optional[str], iso: str) -> None:
    """Remove an existing embedded Ignition config from an ISO image."""
    isoops.ignition_remove(iso, output, _out(output))


# deprecated spellings, hidden
@iso_group.command("embed", hidden=True, context_settings=CTX)
@click.option("-c", "--config", metavar="PATH", help="Ignition config [default: stdin].")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing Ignition config.")
@output_option
@iso_arg
def iso_embed(config: Optional[str], force: bool, output: Optional[str], iso: str) -> None:
    """Embed an Ignition config in an ISO image (deprecated)."""
    echo_err("`iso embed` is deprecated; use `iso ignition embed`.  Continuing.")
    _embed(iso, config, force, output)


@iso_group.command("show", hidden=True, context_settings=CTX)
@iso_arg
def iso_show(iso: str) -> None:
    """Show the embedded Ignition config (deprecated)."""
    echo_err("`iso show` is deprecated; use `iso ignition show`.  Continuing.")
    sys.stdout.buffer.write(isoops.ignition_show(iso))
    sys.stdout.flush()


@iso_group.command("remove", hidden=True, context_settings=CTX)
@output_option
@iso_arg
def iso_remove(output: Optional[str], iso: str) -> None:
    """Remove the embedded Ignition config (deprecated)."""
    echo_err("`iso remove` is deprecated; use `iso ignition remove`.  Continuing.")
    isoops.ignition_remove(iso, output, _out(output))


# ---- network ---------------------------------------------------------------------------------
@iso_group.group("network", context_settings=CTX)
def network_group() -> None:
    """Embed network settings in an ISO image."""


@network_group.command("embed", context_settings=CTX)
@keyfile_option
@click.option("-f", "--force", is_flag=True, help="Overwrite existing network settings.")
@output_option
@iso_arg
def network_embed(keyfiles: Tuple[str, ...], force: bool, output: Optional[str], iso: str) -> None:
    """Embed network settings in an ISO image."""
    stdout = _out(output)
    isoops.network_embed(iso, keyfiles, force, output, stdout)


@network_group.command("extract", context_settings=CTX)
@click.option("-C", "--directory", metavar="DIR", help="Extract to directory.")
@iso_arg
def network_extract(directory: Optional[str], iso: str) -> None:
    """Extract embedded network settings from an ISO image."""
    _print_network(isoops.network_extract(iso, directory))


def _print_network(result: Any) -> None:
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    else:
        for p in result:
            click.echo(printable(p))


@network_group.command("remove", context_settings=CTX)
@output_option
@iso_arg
def network_remove(output: Optional[str], iso: str) -> None:
    """Remove existing network settings from an ISO image."""
    isoops.network_remove(iso, output, _out(output))


# ---- kargs -----------------------------------------------------------------------------------
@iso_group.group("kargs", context_settings=CTX)
def kargs_group() -> None:
    """Modify kernel args in an ISO image."""


@kargs_group.command("modify", context_settings=CTX)
@click.option(
    "-a",
    "--append",
    metavar="KARG",
    multiple=True,
    callback=utf8,
    help="Kernel argument to append.",
)
@click.option(
    "-d",
    "--delete",
    metavar="KARG",
    multiple=True,
    callback=utf8,
    help="Kernel argument to delete.",
)
@click.option(
    "-r",
    "--replace",
    metavar="KARG=OLD=NEW",
    multiple=True,
    callback=utf8,
    help="Kernel argument to replace.",
)
@output_option
@iso_arg
def kargs_modify(
    append: Tuple[str, ...],
    delete: Tuple[str, ...],
    replace: Tuple[str, ...],
    output: Optional[str],
    iso: str,
) -> None:
    """Modify kernel args in an ISO image."""
    stdout = _out(output)
    isoops.kargs_modify(iso, append, delete, replace, output, stdout)


@kargs_group.command("reset", context_settings=CTX)
@output_option
@iso_arg
def kargs_reset(output: Optional[str], iso: str) -> None:
    """Reset kernel args in an ISO image to defaults."""
    isoops.kargs_reset(iso, output, _out(output))


@kargs_group.command("show", context_settings=CTX)
@click.option("-d", "--default", is_flag=True, help="Show default kernel args.")
@iso_arg
def kargs_show(default: bool, iso: str) -> None:
    """Show kernel args from an ISO image."""
    click.echo(isoops.kargs_show(iso, default))


# ---- customize / reset -----------------------------------------------------------------------
@iso_group.command("customize", context_settings=CTX)
@customize_options
@click.option(
    "--live-karg-append",
    metavar="ARG",
    multiple=True,
    callback=utf8,
    help="Live kernel argument to append.",
)
@click.option(
    "--live-karg-delete",
    metavar="ARG",
    multiple=True,
    callback=utf8,
    help="Live kernel argument to delete.",
)
@click.option(
    "--live-karg-replace",
    metavar="K=O=N",
    multiple=True,
    callback=utf8,
    help="Live kernel argument to replace.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing customizations.")
@output_option
@iso_arg
def iso_customize(iso: str, output: Optional[str], force: bool, **kw: Any) -> None:
    """Customize a NestOS live ISO image."""
    opts = cust.CustomizeOptions.from_cli(kw)
    stdout = _out(output)
    res = cust.customize_iso(iso, opts, force, output, stdout)
    for msg in res.messages:
        echo_err(msg)


@iso_group.command("reset", context_settings=CTX)
@output_option
@iso_arg
def iso_reset(output: Optional[str], iso: str) -> None:
    """Restore a NestOS live ISO image to default settings."""
    isoops.iso_reset(iso, output, _out(output))


# ---- extract ---------------------------------------------------------------------------------
@iso_group.group("extract", context_settings=CTX)
def extract_group() -> None:
    """Commands to extract files from a NestOS live ISO image."""


@extract_group.command("pxe", context_settings=CTX)
@click.option(
    "-o", "--output-dir", metavar="DIR", default=".", show_default=True, help="Output directory."
)
@iso_arg
def extract_pxe(output_dir: str, iso: str) -> None:
    """Extract PXE files from an ISO image."""
    for p in isoops.extract_pxe(iso, output_dir):
        click.echo(p)


@extract_group.command("minimal-iso", context_settings=CTX)
@click.option("--output-rootfs", metavar="PATH", help="Extract rootfs image as well.")
@click.option(
    "--rootfs-url", metavar="URL", callback=utf8, help="Inject rootfs URL karg into minimal ISO."
)
@iso_arg
@click.argument("output_iso", default="-", metavar="[OUTPUT_ISO]")
def extract_minimal(
    output_rootfs: Optional[str], rootfs_url: Optional[str], iso: str, output_iso: str
) -> None:
    """Extract a minimal ISO from a NestOS live ISO image."""
    stdout = _out(output_iso)
    miniso.extract_minimal_iso(iso, output_iso, output_rootfs, rootfs_url, stdout)
