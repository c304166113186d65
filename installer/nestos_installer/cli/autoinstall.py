"""CLI: hidden `autoinstall`, run by nestos-installer.service in the live environment.

Builds the install argv from kernel args + installer.d (autoinstall.py) and runs `install`.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import List, Optional

import click

from nestos_installer import autoinstall, deadman
from nestos_installer import run as runner
from nestos_installer.cli import deadman as cli_deadman
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
@cli_deadman.config_option(hidden=True)
@cli_deadman.run_dir_option
@cli_deadman.reboot_command_option
def autoinstall_cmd(
    cmdline_file: Path,
    config_dir: Path,
    offline_dirs: tuple[Path, ...],
    dry_run: bool,
    config_file: Path,
    run_dir: Path,
    reboot_command: Optional[str],
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
    reboot = shlex.split(reboot_command) if reboot_command else None
    try:
        config = deadman.DeadmanConfig.load(config_file)
    except ConfigError as e:  # a switch was asked for but cannot be read: go back
        _dead_end(deadman.Guard(deadman.DeadmanConfig(), run_dir), e, reboot)
        raise
    guard = deadman.Guard(config, run_dir) if config is not None else None
    plan = autoinstall.build_invocation(
        cmdline,
        files,
        autoinstall.find_offline_image(dirs),
        fetch_retries=str(config.fetch_retries) if config is not None else "infinite",
    )
    for notice in plan.notices:
        click.echo(f"Notice: {notice}", err=True)
    if config is not None:
        click.echo(
            f"Dead-man switch: any failure before the first write reboots into the old system "
            f"(deadline {config.deadline} s); once writing began, a failure stays here",
            err=True,
        )
    click.echo(plan.command_line())
    if dry_run:
        return
    _run_install(plan, guard, reboot)
    if files:
        # a config dir left behind would reinstall on every boot of the live system
        shutil.rmtree(config_dir, ignore_errors=True)
    click.echo("nestos-installer: install complete.")


def _run_install(
    plan: autoinstall.Invocation, guard: Optional[deadman.Guard], reboot: Optional[List[str]]
) -> None:
    error: Optional[BaseException] = None
    try:
        install_cmd.main(
            args=list(plan.argv),
            prog_name="nestos-installer install",
            standalone_mode=False,
            obj=guard,
        )
    except click.exceptions.Exit as e:
        if e.exit_code != 0:
            error = InstallFailed(f"install exited with status {e.exit_code}")
    except click.ClickException as e:
        error = InstallFailed(f"install: {e.format_message()}")
    except Exception as e:  # noqa: BLE001 - anything else still means a failed install
        error = e
    if error is not None and guard is not None:
        _dead_end(guard, error, reboot)
    if error is not None:
        click.echo(FAILURE_BANNER, err=True)
        if isinstance(error, InstallFailed) and error.__cause__ is None:
            raise error
        raise InstallFailed("automatic install failed") from error


def _reason(error: BaseException) -> str:
    """The error and its explicit causes in one line (never a library's internals)."""
    parts: List[str] = []
    e: Optional[BaseException] = error
    while e is not None and len(parts) < 4:
        text = str(e).strip()
        if text and text not in parts:
            parts.append(text)
        e = e.__cause__
    return ": ".join(parts) or type(error).__name__


def _dead_end(guard: deadman.Guard, error: BaseException, reboot: Optional[List[str]]) -> None:
    """A failed install under the dead-man switch: before the first write, back to the old
    system; after it, stay here with SSH open and the journal kept, and say so."""
    detail = f"install failed: {_reason(error)}"
    state = guard.fail(detail)
    click.echo(deadman.banner(state, detail), err=True)
    if state.goes_back:
        if reboot is not None:
            runner.run(reboot, check=False, timeout=60)
        else:
            deadman.reboot_to_old_os(lambda m: click.echo(m, err=True))
        return
    deadman.keep_ssh_open()
