"""CLI: hidden `deadman-watch`, run early in the live boot by nestos-installer-deadman.service:
reboot into the old system unless the install claims its first write before the deadline."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, Optional

import click

from nestos_installer import deadman
from nestos_installer import run as runner
from nestos_installer.errors import ConfigError


def _say(msg: str) -> None:
    click.echo(msg, err=True)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def config_option(**kw: Any) -> Decorator:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=deadman.CONFIG,
        show_default=True,
        help="Dead-man config (JSON): its presence arms the switch.",
        **kw,
    )


run_dir_option: Decorator = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=deadman.RUN_DIR,
    show_default=True,
    help="Where the claim and the status file live.",
)
reboot_command_option: Decorator = click.option(
    "--reboot-command", metavar="CMD", help="Run CMD instead of rebooting (tests)."
)


@click.command("deadman-watch", hidden=True)
@config_option()
@run_dir_option
@reboot_command_option
def deadman_watch_cmd(config_file: Path, run_dir: Path, reboot_command: Optional[str]) -> None:
    """Reboot into the old system unless the install begins writing before the deadline."""
    try:
        config = deadman.DeadmanConfig.load(config_file)
    except ConfigError as e:  # asked for but unreadable: still a switch, with the default
        _say(f"{e}; using the default deadline of {deadman.DEFAULT_DEADLINE} s")
        config = deadman.DeadmanConfig()
    if config is None:
        _say(f"no {config_file}: no dead-man switch")
        return

    def expire() -> None:
        if reboot_command:
            runner.run(shlex.split(reboot_command), check=False, timeout=60)
        else:
            deadman.reboot_to_old_os(_say)

    state = deadman.watch(config, expire, _say, run_dir)
    _say(f"dead-man switch: {state.value}")
