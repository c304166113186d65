"""CLI: hidden `dev` subcommands (placeholder until the live ISO work lands)."""

from __future__ import annotations

import click


@click.group("dev", hidden=True)
def dev_group() -> None:
    """Commands for developers."""
