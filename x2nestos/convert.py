"""The conversion: plan -> verify artifacts -> stage kernel + one combined initrd -> kexec load
-> confirm -> jump. Every refusal happens before anything is loaded.

Talks to kexec only through x2nestos.kexec; never prints (the CLI reports progress callbacks).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Optional

from nestos_installer.errors import NestosError, UsageError
from x2nestos import kexec
from x2nestos.artifacts import verify_artifacts
from x2nestos.initramfs import archive, combine
from x2nestos.phases import Phase, Step, Tracker
from x2nestos.plan import ConvertConfig, Plan, build_plan, staging_paths

Say = Callable[[str], None]
Confirm = Callable[[Plan], bool]


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    kernel: Path
    initrd: Path
    loaded: bool
    jumped: bool


def refuse_unless_ok(plan: Plan) -> None:
    bad = plan.first_failure()
    if bad is not None:
        more = [c for c in plan.checks if c.status.blocks and c is not bad]
        hint = ("also: " + "; ".join(c.name for c in more)) if more else None
        raise NestosError(f"{bad.name}: {bad.detail}", hint=hint)


def stage(plan: Plan) -> tuple[Path, Path]:
    """Write the kernel and the combined initrd (live initrd + rootfs + our archive), 0600 in
    a 0700 directory on disk-backed storage."""
    cfg = plan.config
    art, payload = plan.artifacts, plan.payload
    if art is None or payload is None or plan.target is None or not plan.target.stable_path:
        raise UsageError("nothing to stage (no artifacts or no target)")
    directory, kernel, initrd = staging_paths(cfg)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ours = {kernel.resolve(), initrd.resolve()}
    if any(p.path is not None and p.path.resolve() in ours for p in art.parts.values()):
        raise UsageError(f"the live artifacts must not live in the staging dir {directory}")
    for p in (kernel, initrd):
        if p.exists():
            p.unlink()
    extra = archive(payload.members(), cfg.compression)
    _write(kernel, lambda out: art.copy("kernel", out))
    _write(initrd, lambda out: combine(art.initrd_parts(), extra, out))
    return kernel, initrd


def _write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """A new file, 0600, written and fsync'd (never through a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())


def clean_staging(cfg: ConvertConfig) -> None:
    directory, kernel, initrd = staging_paths(cfg)
    for p in (kernel, initrd):
        if p.exists():
            p.unlink()
    drop_downloads(cfg)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def drop_downloads(cfg: ConvertConfig) -> None:
    """Remove the --stream artifacts: the download dir is ours alone, so what an earlier run
    left there is dropped rather than trusted (downloads never overwrite a file)."""
    downloads = staging_paths(cfg)[0] / "download"
    if downloads.is_dir() and not downloads.is_symlink():
        shutil.rmtree(downloads)


def _in(track: Optional[Tracker], phase: Phase) -> ContextManager[Step]:
    """The phase's context under a tracker (--json), else nothing."""
    return track.phase(phase) if track is not None else contextlib.nullcontext(Step())


def ready(cfg: ConvertConfig, say: Say, *, build_only: bool) -> Plan:
    """The plan, refused unless every check passes; --stream downloaded; signatures checked."""
    say("checking the host and the artifacts")
    plan = build_plan(cfg)
    refuse_unless_ok(plan)
    if cfg.stream:  # download only once the host itself is known to be convertible
        say(f"downloading stream {cfg.stream}")
        drop_downloads(cfg)
        plan = build_plan(cfg, download=True)
        refuse_unless_ok(plan)
    assert plan.artifacts is not None and plan.payload is not None
    if not build_only and cfg.root.resolve() != Path("/"):
        raise UsageError(f"--root {cfg.root} is for inspection only; use --build-only")
    say("verifying signatures")
    verify_artifacts(plan.artifacts, cfg.keys(), insecure=cfg.insecure)
    for line in plan.artifacts.verification:
        say(f"  {line}")
    return plan


def convert(
    cfg: ConvertConfig,
    *,
    say: Say,
    confirm: Optional[Confirm],
    stage_only: bool,
    build_only: bool = False,
    track: Optional[Tracker] = None,
) -> Outcome:
    """Run the conversion. `confirm=None` means --yes. `build_only` stops after staging (used
    with --root for inspection; kexec is never touched then). `track`: report phases."""
    with _in(track, Phase.PLAN):
        plan = ready(cfg, say, build_only=build_only)
    say(f"staging in {cfg.staging}")
    loaded = False
    try:
        with _in(track, Phase.STAGE) as step:
            kernel, initrd = stage(plan)
            step.detail = f"kernel {kernel}, initrd {initrd} ({initrd.stat().st_size} bytes)"
            say("  " + step.detail)
        if build_only:
            return Outcome(plan, kernel, initrd, False, False)
        kind = "-s" if plan.kexec.use_file_load else "-c"
        say(f"loading the live kernel (kexec {kind})")
        with _in(track, Phase.LOADED):
            kexec.load(
                kernel, initrd, plan.cmdline, file_load=plan.kexec.use_file_load, root=cfg.root
            )
            loaded = True
        if stage_only:
            say("staged; `x2nestos unload` undoes it, `systemctl kexec` fires it")
            return Outcome(plan, kernel, initrd, True, False)
        if confirm is not None and not confirm(plan):
            kexec.unload(cfg.root)
            loaded = False
            raise NestosError("conversion cancelled; the live kernel was unloaded")
        say("jumping into the NestOS live environment")
        with _in(track, Phase.JUMPED):
            kexec.execute(systemd=plan.systemd, root=cfg.root)
        return Outcome(plan, kernel, initrd, True, True)
    except BaseException:
        if loaded and not stage_only:
            try:
                kexec.unload(cfg.root)
            except NestosError:
                pass
        if not loaded:
            clean_staging(cfg)
        raise


def unload(cfg: ConvertConfig) -> bool:
    was = kexec.unload(cfg.root)
    clean_staging(cfg)
    return was
