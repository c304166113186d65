"""CLI: `iso` subcommands (placeholder until the live ISO work lands)."""

from __future__ import annotations

import click


@click.group("iso")
def iso_group() -> None:
    """Commands to manage a NestOS live ISO image."""
