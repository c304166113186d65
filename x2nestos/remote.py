"""Converting a host from a controller over SSH (--host): probe it into a local tree, plan with
the same readers as local mode, stream kernel + initrd to it (sha256 checked there), kexec -l
there, read /sys/kernel/kexec_loaded back, jump; then x2nestos.follow sees it through.

A verb: uses plan, convert (refusals, artifact checks), ssh, probe, follow. Never prints.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from nestos_installer import run as runner
from nestos_installer.errors import CommandFailed, NestosError, UsageError
from x2nestos import follow, hostfacts, identity, kexec, probe
from x2nestos.artifacts import verify_artifacts
from x2nestos.convert import refuse_unless_ok
from x2nestos.initramfs import Sink, archive, combine
from x2nestos.payload import LiveSsh
from x2nestos.phases import Phase, Tracker
from x2nestos.plan import Carry, ConvertConfig, Plan, build_plan
from x2nestos.ssh import Connection, SshError, SshTarget, keygen, remote_command, send

# shell snippets run on the host; paths come as arguments, never spliced into the text
MAKE_STAGING = 'umask 077; mkdir -p -- "$1" && chmod 0700 -- "$1" && [ -d "$1" ] && [ ! -L "$1" ]'
WRITE_FILE = 'umask 077; rm -f -- "$1" && exec cat > "$1"'
CLEAN = 'rm -f -- "$1/vmlinuz" "$1/initrd-combined.img"; rmdir -- "$1" 2>/dev/null; true'
KERNEL, INITRD = "vmlinuz", "initrd-combined.img"
JUMP_GONE = 180  # seconds for the old system to drop the SSH connection after the jump
GONE_PROBE = 5.0  # seconds a probe of the old system may take before it counts as unanswered
GONE_AFTER = 2  # unanswered probes in a row: the old system is gone
DEFAULT_TIMEOUT = 1800.0  # each phase after the jump (TCG guests install slowly)


@dataclass(frozen=True)
class RemoteOptions:
    target: SshTarget
    install_kexec: bool = False
    wait: bool = True  # False: --no-wait, stop after the jump
    timeout: float = DEFAULT_TIMEOUT  # each phase after the jump


class Session:
    """A private 0700 directory on the controller (SSH control sockets, the probe's tree,
    known_hosts files) and the connection to the host; everything removed on exit."""

    def __init__(self, target: SshTarget, *, login: bool = True) -> None:
        base = tempfile.gettempdir()
        if len(base) > 60:  # a unix socket path has ~100 bytes; ssh adds a suffix while binding
            base = "/tmp"
        self.dir = Path(tempfile.mkdtemp(prefix="x2nestos-", dir=base))
        self.conn = Connection(target, self.dir)
        self.login = login
        self.old_boot_id: Optional[str] = None  # the old system's, read just before the jump

    def __enter__(self) -> Session:
        try:
            if self.login:
                self.conn.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def execute(conn: Connection, work: Path) -> probe.Execute:
    """Runs a probe script with sh on the host (as root through sudo with --sudo)."""
    sh = "sudo -n -- sh -s" if conn.target.sudo else "sh -s"
    command = sh + ' "$SSH_CONNECTION" "$LOGNAME"'  # expanded there, before sudo resets them

    def run(script: str, consume: Callable[[Any], None]) -> None:
        with open(work / "probe.err", "w+b") as err:
            proc = conn.spawn(command, stdin=runner.PIPE, stdout=runner.PIPE, stderr=err)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(script.encode())
                proc.stdin.close()
                consume(proc.stdout)
                rc = proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            err.seek(0)
            tail = err.read()[-1000:].decode(errors="replace").strip()
        if rc != 0:
            raise NestosError(
                f"the probe failed on {conn.target.name} (status {rc}): {tail or 'no message'}",
                hint="--sudo needs passwordless sudo (sudo -n)" if "sudo" in tail else None,
            )

    return run


def probe_host(session: Session, cfg: ConvertConfig, install_kexec: bool = False) -> probe.Snapshot:
    """The host's files and facts in a local tree; with `install_kexec`, kexec-tools first
    installed by the host's own package manager when it lacks kexec."""
    run = execute(session.conn, session.dir)
    snap = probe.collect(run, session.dir / "tree", str(cfg.staging))
    if install_kexec and not snap.has("kexec"):
        command = hostfacts.kexec_install_command(snap.tree)
        if command is None:
            raise UsageError(f"{session.conn.target.name}: cannot tell how to install kexec-tools")
        session.conn.run(list(command), timeout=1200)
        snap = probe.collect(run, session.dir / "tree-2", str(cfg.staging))
    return snap


def host_config(cfg: ConvertConfig, snap: probe.Snapshot) -> ConvertConfig:
    """The options as they apply to the probed host: its tree as root, and the interface
    holding the controller's SSH session among those that must be carried."""
    must = cfg.must_carry + ((snap.ssh_interface,) if snap.ssh_interface else ())
    return replace(cfg, root=snap.tree, must_carry=must)


def host_facts(snap: probe.Snapshot, target: SshTarget) -> Dict[str, Any]:
    """What doctor --host reports about the SSH side of the host."""
    return {
        "host": target.host,
        "login-user": snap.login_user,
        "sudo": target.sudo,
        "controller-address": snap.ssh_client,
        "ssh-interface": snap.ssh_interface,
        "tools": sorted(snap.tools),
    }


def plan_remote(cfg: ConvertConfig, target: SshTarget) -> Tuple[Plan, Dict[str, Any]]:
    """doctor / plan --host: (the plan, the SSH facts); nothing is changed on the host."""
    with Session(target) as session:
        snap = probe_host(session, cfg)
        plan = build_plan(host_config(cfg, snap))
        return plan, host_facts(snap, target)


def live_ssh(session: Session, snap: probe.Snapshot, target: SshTarget) -> LiveSsh:
    """The controller's way into the live environment: the login user's authorized keys
    (the key this login used is one of them) plus --identity's public key, and a new host key."""
    user = snap.login_user or target.user or "root"
    ident = identity.read_identity(snap.tree, users=True, host_keys=False, hostname=False)
    keys = [k for u in ident.users if u.name == user for k in u.keys]
    if target.identity is not None:
        pub = Path(f"{target.identity}.pub")
        if pub.is_file():
            keys.append(" ".join(pub.read_text().split()[:2]))
    if not keys:
        raise UsageError(
            f"{user} on {target.host} has no authorized SSH key to let x2nestos into the live "
            "environment",
            hint="log in by key, or give --identity with its .pub beside it",
        )
    private, public = keygen(session.dir / "live_host_key", "x2nestos-live")
    return LiveSsh(tuple(dict.fromkeys(keys)), private, public)


def carried_host_keys(snap: probe.Snapshot) -> List[str]:
    """The host's public host keys (`type base64`), as it will serve them after the install."""
    ident = identity.read_identity(snap.tree, users=False, host_keys=True, hostname=False)
    out = []
    for path, (data, _mode) in sorted(ident.host_keys.items()):
        words = data.decode(errors="replace").split()
        if path.endswith(".pub") and len(words) >= 2:
            out.append(" ".join(words[:2]))
    return out


def prepare(session: Session, cfg: ConvertConfig, snap: probe.Snapshot) -> Plan:
    """The plan, refused unless every check passes; artifacts verified; the live SSH added."""
    hcfg = host_config(cfg, snap)
    plan = build_plan(hcfg)
    refuse_unless_ok(plan)
    if hcfg.stream:  # downloaded on the controller, into the session's private tree
        plan = build_plan(hcfg, download=True)
        refuse_unless_ok(plan)
    assert plan.artifacts is not None and plan.payload is not None
    verify_artifacts(plan.artifacts, cfg.keys(), insecure=cfg.insecure)
    ssh = live_ssh(session, snap, session.conn.target)
    plan.payload = replace(plan.payload, live_ssh=ssh)
    return plan


@dataclass(frozen=True)
class Staged:
    path: str  # on the host
    size: int
    sha256: str

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _send(conn: Connection, path: str, write: Callable[[Any], object]) -> Staged:
    sinks: List[Sink] = []

    def produce(stdin: Any) -> None:
        sink = Sink(stdin)
        sinks.append(sink)
        write(sink)

    send(conn, remote_command(["sh", "-c", WRITE_FILE, "sh", path], sudo=conn.target.sudo), produce)
    return Staged(path, sinks[0].size, sinks[0].sha256)


def stage_remote(conn: Connection, plan: Plan) -> Tuple[Staged, Staged]:
    """Kernel and combined initrd (live initrd + rootfs + our archive) into the host's staging
    dir, 0600 in a 0700 dir; their sha256 computed there must match what was sent."""
    art, payload = plan.artifacts, plan.payload
    assert art is not None and payload is not None
    d = str(plan.config.staging)
    conn.run(["sh", "-c", MAKE_STAGING, "sh", d])
    extra = archive(payload.members(), plan.config.compression)
    kernel = _send(conn, f"{d}/{KERNEL}", lambda out: art.copy("kernel", out))
    initrd = _send(conn, f"{d}/{INITRD}", lambda out: combine(art.initrd_parts(), extra, out))
    sums = conn.text(["sha256sum", "--", kernel.path, initrd.path], timeout=900).splitlines()
    found = {line.split(None, 1)[1].lstrip("*"): line.split()[0] for line in sums if " " in line}
    for f in (kernel, initrd):
        if found.get(f.path) != f.sha256:
            raise NestosError(
                f"{f.path} on the host has sha256 {found.get(f.path)}, not {f.sha256} as sent"
            )
    return kernel, initrd


def load_remote(conn: Connection, plan: Plan, kernel: Staged, initrd: Staged) -> None:
    argv = kexec.load_argv(
        kernel.path, initrd.path, plan.cmdline, file_load=plan.kexec.use_file_load
    )
    try:
        conn.run(argv, timeout=900)
    except CommandFailed as e:
        raise kexec.load_failed(e) from e
    if not is_loaded(conn):
        raise kexec.not_loaded()


def is_loaded(conn: Connection) -> bool:
    return conn.text(["cat", "/sys/kernel/kexec_loaded"], root=False) == "1"


def jump_remote(conn: Connection, plan: Plan) -> Tuple[float, str]:
    """Fire the loaded kernel (read back first) and wait until the old system is gone: its
    connection dropped, or GONE_AFTER probes in a row unanswered (a host whose network went
    down first never closes the connection; ssh's keepalive would take a minute to notice).
    Returns the seconds that took and the old system's boot id."""
    if not is_loaded(conn):
        raise kexec.not_loaded()
    old = follow.boot_id(conn)
    if plan.systemd:
        argv = ["systemctl", "--no-block", "kexec"]  # orderly shutdown, then the jump
    else:
        argv = ["sh", "-c", "sync; nohup kexec -e >/dev/null 2>&1 &"]
    start = time.monotonic()
    try:
        conn.run(argv, timeout=120)
    except SshError:
        pass  # the connection went down with the old system: that is the jump
    silent = 0
    while silent < GONE_AFTER and conn.alive():
        if time.monotonic() - start > JUMP_GONE:
            raise NestosError(f"the host still answers {JUMP_GONE}s after `{' '.join(argv)}`")
        try:
            follow.boot_id(conn, timeout=GONE_PROBE)
            silent = 0
        except SshError:
            silent += 1
        time.sleep(2)
    conn.stop()
    return time.monotonic() - start, old


def clean_remote(conn: Connection, staging: str) -> bool:
    """Unload a staged kernel and remove the staged files; whether a kernel was loaded."""
    was = is_loaded(conn)
    if was:
        conn.run(["kexec", "-u"], timeout=120)
    conn.run(["sh", "-c", CLEAN, "sh", staging], check=False)
    if is_loaded(conn):
        raise NestosError("kexec -u ran but a kernel is still loaded")
    return was


def unload_remote(cfg: ConvertConfig, target: SshTarget) -> bool:
    with Session(target) as session:
        return clean_remote(session.conn, str(cfg.staging))


Confirm = Callable[[Plan], bool]


def _require_verifiable(cfg: ConvertConfig, opts: RemoteOptions) -> None:
    if opts.wait and Carry.HOST_KEYS not in cfg.carry:
        raise UsageError(
            "convert --host checks the converted host by its own host key, which must be carried",
            hint="add host-keys to --carry, or pass --no-wait",
        )


def convert_remote(
    cfg: ConvertConfig,
    opts: RemoteOptions,
    track: Tracker,
    *,
    confirm: Optional[Confirm],
    stage_only: bool,
) -> Phase:
    """Run the conversion; returns the phase reached (VERIFIED, or JUMPED with --no-wait,
    LOADED with --stage-only). A failure raises PhaseFailed naming its phase."""
    _require_verifiable(cfg, opts)
    with Session(opts.target, login=False) as session:
        with track.phase(Phase.PROBE) as step:
            session.conn.start()  # a host that does not let us in fails the probe phase
            snap = probe_host(session, cfg, opts.install_kexec)
            step.detail = f"{len(list(snap.tree.rglob('*')))} files and facts read"
            step.data = {"ssh": host_facts(snap, opts.target)}
        with track.phase(Phase.PLAN) as step:
            plan = prepare(session, cfg, snap)
            step.detail = f"target {plan.target.stable_path if plan.target else None}"
            step.data = {"plan": _plan_summary(plan)}
        reached = _stage_and_jump(session, plan, track, confirm, stage_only)
        if reached is not Phase.JUMPED or not opts.wait:
            return reached
        expect = identity.read_hostname(snap.tree) if Carry.HOSTNAME in cfg.carry else None
        follow.follow(
            follow.Expect(
                target=opts.target,
                live_key=plan.payload.live_ssh.host_key_pub,  # type: ignore[union-attr]
                host_keys=tuple(carried_host_keys(snap)),
                hostname=expect,
                installer_unit=plan.payload.paths.installer_unit,  # type: ignore[union-attr]
                timeout=opts.timeout,
                old_boot_id=session.old_boot_id,
                # back on its old system: the staged kernel and initrd (they hold the Ignition
                # config and host keys) removed
                on_return=functools.partial(clean_remote, staging=str(cfg.staging)),
            ),
            session.dir,
            track,
        )
        return Phase.VERIFIED


def _plan_summary(plan: Plan) -> Dict[str, Any]:
    d = plan.to_json()
    out = {k: d[k] for k in ("architecture", "kexec", "kernel-command-line", "carried")}
    out["target"] = plan.target.stable_path if plan.target else None
    return out


def _stage_and_jump(
    session: Session, plan: Plan, track: Tracker, confirm: Optional[Confirm], stage_only: bool
) -> Phase:
    """STAGE, LOADED, (confirmation), JUMPED; before the jump every failure unloads the
    kernel and removes the staged files, so the host is left as it was."""
    conn, staging = session.conn, str(plan.config.staging)
    try:
        with track.phase(Phase.STAGE) as step:
            kernel, initrd = stage_remote(conn, plan)
            step.data = {"kernel": kernel.to_json(), "initrd": initrd.to_json()}
        with track.phase(Phase.LOADED) as step:
            load_remote(conn, plan, kernel, initrd)
            step.detail = (
                "kexec " + ("-s" if plan.kexec.use_file_load else "-c") + "; kexec_loaded 1"
            )
        if stage_only:
            return Phase.LOADED
        if confirm is not None and not confirm(plan):
            raise NestosError("conversion cancelled; the live kernel was unloaded")
        with track.phase(Phase.JUMPED) as step:
            gone, session.old_boot_id = jump_remote(conn, plan)
            step.detail = f"the old system dropped SSH after {gone:.0f}s"
        return Phase.JUMPED
    except BaseException:
        if conn.started:
            try:
                clean_remote(conn, staging)
            except NestosError:
                pass
        raise
