"""CLI: `download` and `list-stream` (placeholder until the stream work lands)."""

from __future__ import annotations

import click


@click.command("download")
def download_cmd() -> None:
    """Download a NestOS image."""
    raise click.ClickException("download is not implemented yet")


@click.command("list-stream")
def list_stream_cmd() -> None:
    """List available images in a NestOS stream."""
    raise click.ClickException("list-stream is not implemented yet")
