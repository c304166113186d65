"""CLI: `download` (verified artifacts from a stream or a URL) and `list-stream`.

Turns flags into a DownloadConfig and calls nestos_installer.download; prints final paths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

import click

from nestos_installer.cli.common import utf8
from nestos_stream import DEFAULT_BASE_URL, DEFAULT_STREAM

if TYPE_CHECKING:
    from nestos_installer.fetch import FetchRetries


def _retries(ctx: click.Context, param: click.Parameter, value: str) -> FetchRetries:
    from nestos_installer.errors import UsageError
    from nestos_installer.fetch import FetchRetries

    try:
        return FetchRetries.parse(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


_stream_option = click.option(
    "-s",
    "--stream",
    default=DEFAULT_STREAM,
    show_default=True,
    metavar="NAME",
    callback=utf8,
    help="Stream name.",
)


@click.command("download")
@_stream_option
@click.option(
    "-a",
    "--architecture",
    default=None,
    metavar="ARCH",
    callback=utf8,
    help="Architecture [default: this machine's].",
)
@click.option(
    "-p",
    "--platform",
    "platform_",
    default="metal",
    show_default=True,
    metavar="NAME",
    callback=utf8,
    help="Platform name.",
)
@click.option(
    "-f",
    "--format",
    "format_",
    default="raw.xz",
    show_default=True,
    metavar="FORMAT",
    callback=utf8,
    help="Image format (raw.xz, 4k.raw.xz, iso, pxe...).",
)
@click.option(
    "-u",
    "--image-url",
    default=None,
    metavar="URL",
    callback=utf8,
    help="Download this URL instead (signature at URL.sig).",
)
@click.option(
    "-C",
    "--directory",
    default=".",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
@click.option(
    "-d", "--decompress", is_flag=True, help="Decompress the image and don't save the signature."
)
@click.option(
    "--insecure", is_flag=True, help="Allow a missing signature (a bad one is never accepted)."
)
@click.option(
    "--stream-base-url",
    default=DEFAULT_BASE_URL,
    metavar="URL",
    callback=utf8,
    help="Base URL of the stream metadata.",
)
@click.option(
    "--fetch-retries",
    default="0",
    show_default=True,
    metavar="N",
    callback=_retries,
    help="Retries on network errors: a number or 'infinite'.",
)
@click.option(
    "--keyring",
    "keyrings",
    multiple=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Also trust the OpenPGP keys in FILE (repeatable).",
)
@click.option(
    "--progress",
    type=click.Choice(["auto", "bar", "plain", "json", "none"]),
    default="auto",
    show_default=True,
    help="Progress display: a bar on a TTY, plain lines, JSON lines, or none.",
)
def download_cmd(
    stream: str,
    architecture: Optional[str],
    platform_: str,
    format_: str,
    image_url: Optional[str],
    directory: Path,
    decompress: bool,
    insecure: bool,
    stream_base_url: str,
    fetch_retries: FetchRetries,
    keyrings: Tuple[Path, ...],
    progress: str,
) -> None:
    """Download a NestOS image, checked against its sha256 and signature."""
    # Deferred: requests and gnupg load only when these commands run.
    from nestos_installer.download import DownloadConfig, download, host_architecture
    from nestos_installer.pipeline.progress import ProgressMode

    _log_to_stderr()
    config = DownloadConfig(
        directory=directory,
        stream=stream,
        stream_base_url=stream_base_url,
        architecture=architecture or host_architecture(),
        platform=platform_,
        format=format_,
        image_url=image_url or None,
        decompress=decompress,
        insecure=insecure,
        keyrings=keyrings,
        fetch_retries=fetch_retries,
        progress=ProgressMode(progress),
    )
    for path in download(config):
        _echo(str(path))


@click.command("list-stream")
@_stream_option
@click.option(
    "--stream-base-url",
    default=DEFAULT_BASE_URL,
    metavar="URL",
    callback=utf8,
    help="Base URL of the stream metadata.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def list_stream_cmd(stream: str, stream_base_url: str, as_json: bool) -> None:
    """List the images available in a NestOS stream."""
    from nestos_installer.download import format_table, list_stream

    rows = list_stream(stream, stream_base_url)
    if as_json:
        doc = {
            "stream": stream,
            "images": [
                {
                    "architecture": r.architecture,
                    "platform": r.platform,
                    "format": r.format,
                    "release": r.release,
                }
                for r in rows
            ],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for line in format_table(rows):
        _echo(line)


def _echo(text: str) -> None:
    """A line of text from the server (names in the stream): lone surrogates, which a stream
    document may hold, are shown escaped rather than failing the output."""
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _log_to_stderr() -> None:
    """Warnings (e.g. an unsigned image accepted with --insecure) reach the user on stderr."""
    root = logging.getLogger("nestos_installer")
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
