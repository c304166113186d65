"""CLI: hidden `autoinstall` run by the live environment's install service (placeholder)."""

from __future__ import annotations

import click


@click.command("autoinstall", hidden=True)
def autoinstall_cmd() -> None:
    """Run the unattended install configured by nestos.inst.* kargs."""
    raise click.ClickException("autoinstall is not implemented yet")
