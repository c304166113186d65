"""CLI: `install` (placeholder, replaced by the install work)."""

from __future__ import annotations

import click


@click.command("install")
def install_cmd() -> None:
    """Install NestOS to a disk."""
    raise click.ClickException("install is not implemented yet")
