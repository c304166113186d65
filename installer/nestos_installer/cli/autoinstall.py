"""CLI: hidden `autoinstall`, run by nestos-installer.service in the live environment.

Builds the install argv from kernel args + installer.d (autoinstall.py) and runs `install`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import click

from nestos_installer import autoinstall
from nestos_installer.cli.install import install_cmd
from nestos_installer.errors import ConfigError, InstallFailed

FAILURE_BANNER = (
    "\n"
    "############################################################\n"
    "nestos-installer: INSTALL FAILED; see the error below.\n"
    "The target disk was not made bootable; not rebooting into it.\n"
    "############################################################"
)


@click.command("autoinstall", hidden=True)
@click.option(
    "--cmdline",
    "cmdline_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/proc/cmdline"),
    show_default=True,
    help="Read kernel args from FILE.",
)
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=autoinstall.INSTALLER_D,
    show_default=True,
    help="Installer config directory.",
)
@click.option(
    "--offline-dir",
    "offline_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Look here for the media's signed metal image (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Print the install command; don't run it.")
def autoinstall_cmd(
    cmdline_file: Path, config_dir: Path, offline_dirs: tuple[Path, ...], dry_run: bool
) -> None:
    """Run the unattended install configured by nestos.inst.* kargs."""
    try:
        text = cmdline_file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConfigError(f"reading kernel command line {cmdline_file}") from e
    cmdline = autoinstall.Cmdline.parse(text)
    files = autoinstall.list_config_dir(config_dir)
    if not autoinstall.should_run(cmdline, files):
        click.echo("No nestos.inst.install_dev karg and no installer config; nothing to do.")
        return
    dirs = offline_dirs or autoinstall.OFFLINE_IMAGE_DIRS
    plan = autoinstall.build_invocation(cmdline, files, autoinstall.find_offline_image(dirs))
    for notice in plan.notices:
        click.echo(f"Notice: {notice}", err=True)
    click.echo(plan.command_line())
    if dry_run:
        return
    _run_install(plan)
    if files:
        # a config dir left behind would reinstall on every boot of the live system
        shutil.rmtree(config_dir, ignore_errors=True)
    click.echo("nestos-installer: install complete.")


def _run_install(plan: autoinstall.Invocation) -> None:
    error: Optional[BaseException] = None
    try:
        install_cmd.main(
            args=list(plan.argv), prog_name="nestos-installer install", standalone_mode=False
        )
    except click.exceptions.Exit as e:
        if e.exit_code != 0:
            error = InstallFailed(f"install exited with status {e.exit_code}")
    except click.ClickException as e:
        error = InstallFailed(f"install: {e.format_message()}")
    except Exception as e:  # noqa: BLE001 - anything else still means a failed install
        error = e
    if error is not None:
        click.echo(FAILURE_BANNER, err=True)
        if isinstance(error, InstallFailed) and error.__cause__ is None:
            raise error
        raise InstallFailed("automatic install failed") from error
