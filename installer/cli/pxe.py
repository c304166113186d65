"""CLI: `pxe` subcommands (placeholder until the live PXE work lands)."""

from __future__ import annotations

import click


@click.group("pxe")
def pxe_group() -> None:
    """Commands to manage NestOS live PXE boot images."""
