"""The conversion: plan -> verify artifacts -> stage kernel + one combined initrd -> kexec load
-> confirm -> jump. Every refusal happens before anything is loaded.

Talks to kexec only through x2nestos.kexec; never prints (the CLI reports progress callbacks).
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from nestos_installer.errors import NestosError, UsageError
from x2nestos import kexec
from x2nestos.artifacts import verify_artifacts
from x2nestos.initramfs import archive, concatenate
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
    fd = os.open(kernel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        art.copy("kernel", out)
    pieces = []
    with ExitStack() as stack:
        for name in ("initramfs", "rootfs"):
            if name not in art.parts:
                continue
            part = art.parts[name]
            if part.path is not None:
                pieces.append(part.path)
                continue
            tmp = directory / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            stack.callback(_unlink_if_exists, tmp)
            with os.fdopen(fd, "wb") as out:
                art.copy(name, out)
            pieces.append(tmp)
        concatenate(pieces, archive(payload.members(), cfg.compression), initrd)
    return kernel, initrd


def _unlink_if_exists(path: Path) -> None:
    if path.exists():
        path.unlink()


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


def convert(
    cfg: ConvertConfig,
    *,
    say: Say,
    confirm: Optional[Confirm],
    stage_only: bool,
    build_only: bool = False,
) -> Outcome:
    """Run the conversion. `confirm=None` means --yes. `build_only` stops after staging (used
    with --root for inspection; kexec is never touched then)."""
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
    say(f"staging in {cfg.staging}")
    loaded = False
    try:
        kernel, initrd = stage(plan)
        say(f"  kernel {kernel}, initrd {initrd} ({initrd.stat().st_size} bytes)")
        if build_only:
            return Outcome(plan, kernel, initrd, False, False)
        say("loading the live kernel (kexec " + ("-s" if plan.kexec.use_file_load else "-c") + ")")
        kexec.load(kernel, initrd, plan.cmdline, file_load=plan.kexec.use_file_load, root=cfg.root)
        loaded = True
        if stage_only:
            say("staged; `x2nestos unload` undoes it, `systemctl kexec` fires it")
            return Outcome(plan, kernel, initrd, True, False)
        if confirm is not None and not confirm(plan):
            kexec.unload(cfg.root)
            loaded = False
            raise NestosError("conversion cancelled; the live kernel was unloaded")
        say("jumping into the NestOS live environment")
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
