"""The `install` verb: resolve and check everything, stream the verified image onto the
target (first MiB last), then edit the `boot` filesystem; on failure wipe the partition table.
Also `describe`, the text of `install --plan`.

Orchestration only: the concepts live in source, writer, gpt, bootconfig, ignition, blockdev,
disks, prewrite and deadman (the checks and the claim of an install under a dead-man switch).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from nestos_installer import (
    blockdev,
    bootconfig,
    deadman,
    disks,
    gpt,
    ignition,
    prewrite,
    source,
    writer,
)
from nestos_installer.cabundle import check_ca_bundle, trust_bundle
from nestos_installer.errors import (
    ConfigError,
    HashMismatch,
    InstallFailed,
    NestosError,
    TargetError,
    UsageError,
)
from nestos_installer.fetch import Fetcher, FetchRetries, check_url
from nestos_installer.ignition import IgnitionHash
from nestos_installer.pipeline import decompress
from nestos_installer.pipeline.decompress import decompressed
from nestos_installer.pipeline.progress import Progress, ProgressMode
from nestos_installer.pipeline.readers import TeeReader
from nestos_installer.signature.policy import Keyring
from nestos_installer.signature.verifier import SignatureVerifier
from nestos_installer.untrusted import IGNITION_MAX
from nestos_stream import signature_url

Say = Callable[[str], None]
DEFAULT_NETWORK_DIR = Path("/etc/NetworkManager/system-connections/")


@dataclass(frozen=True)
class InstallConfig:
    dest_device: str
    image_file: Optional[Path] = None
    image_url: Optional[str] = None
    stream: Optional[str] = None
    stream_base_url: Optional[str] = None
    architecture: str = "x86_64"
    platform: Optional[str] = None
    offline: bool = False
    ignition_file: Optional[Path] = None
    ignition_url: Optional[str] = None
    ignition_hash: Optional[IgnitionHash] = None
    ignition_ca: Tuple[Path, ...] = ()
    insecure_ignition: bool = False
    firstboot_args: Optional[str] = None
    append_karg: Tuple[str, ...] = ()
    delete_karg: Tuple[str, ...] = ()
    console: Tuple[bootconfig.Console, ...] = ()
    copy_network: bool = False
    network_dir: Path = DEFAULT_NETWORK_DIR
    save: gpt.PartitionFilter = field(default_factory=gpt.PartitionFilter)
    insecure: bool = False
    keyrings: Tuple[Path, ...] = ()
    preserve_on_error: bool = False
    fetch_retries: FetchRetries = field(default_factory=lambda: FetchRetries(0))
    progress: ProgressMode = ProgressMode.AUTO

    def __post_init__(self) -> None:
        """What can be judged from the options alone is judged before any disk is opened."""
        given = [x for x in (self.image_file, self.image_url, self.stream) if x]
        if len(given) > 1:
            raise UsageError("give only one of --image-file, --image-url and --stream")
        if self.image_url is not None:
            check_url(self.image_url)
        if self.offline and (self.image_url or self.stream):
            raise UsageError("--offline cannot fetch an image; give --image-file instead")
        if self.ignition_file is not None and self.ignition_url is not None:
            raise UsageError("give only one of --ignition-file and --ignition-url")
        if self.ignition_url is not None:
            check_url(self.ignition_url)

    @property
    def boot_edits(self) -> bootconfig.BootEdits:
        return bootconfig.BootEdits(
            platform=self.platform,
            consoles=self.console,
            append=self.append_karg,
            delete=self.delete_karg,
            firstboot_args=self.firstboot_args,
        )


def load_ignition(cfg: InstallConfig, fetcher: Optional[Fetcher]) -> Optional[bytes]:
    """Read (or fetch) and validate the Ignition config before the disk is touched; without a
    fetcher (`--plan`) only a local config is read."""
    if cfg.ignition_file is not None:
        data = ignition.read_config(cfg.ignition_file)
        src = str(cfg.ignition_file)
    elif cfg.ignition_url is not None and fetcher is not None:
        url = check_url(cfg.ignition_url)
        if url.startswith("http:") and cfg.ignition_hash is None and not cfg.insecure_ignition:
            raise UsageError(
                "refusing to fetch Ignition config over HTTP without "
                "--ignition-hash or --insecure-ignition"
            )
        data = fetcher.get_bytes(url, max_size=IGNITION_MAX, what="Ignition config")
        src = url
    else:
        return None
    ignition.validate(data, src)
    if cfg.ignition_hash is not None:
        cfg.ignition_hash.verify(data)  # checked up front: a mismatch must not cost a disk
    return data


def check_local_inputs(cfg: InstallConfig) -> None:
    """What `--plan` checks of the inputs, reading nothing but local files: the Ignition config
    (with its hash) and the CA bundles."""
    load_ignition(cfg, None)
    for p in cfg.ignition_ca:
        check_ca_bundle(p)


def _make_fetcher(cfg: InstallConfig, stack: ExitStack) -> Fetcher:
    """The one HTTP client of an install; --ignition-ca bundles add to the default trust."""
    ca: Optional[Path] = None
    if cfg.ignition_ca:
        bundle = trust_bundle(cfg.ignition_ca)
        fd, name = tempfile.mkstemp(prefix="nestos-installer-ca-")
        stack.callback(os.unlink, name)
        with os.fdopen(fd, "wb") as f:
            f.write(bundle)
        ca = Path(name)
    return Fetcher(cfg.fetch_retries, ca_bundle=ca)


def _open_source(cfg: InstallConfig, fetcher: Fetcher, sector: int, say: Say) -> source.ImageSource:
    if cfg.image_file is not None:
        return source.open_file(cfg.image_file, cfg.insecure, say)
    if cfg.image_url is not None:
        return source.open_url(fetcher, cfg.image_url, cfg.insecure, say)
    if cfg.offline:
        raise UsageError(
            "cannot perform offline install; metadata missing",
            hint="give --image-file with a local image",
        )
    fmt = "4k.raw.xz" if sector == 4096 else "raw.xz"
    spec = source.SourceSpec(
        stream=cfg.stream or "2403-LTS",
        stream_base_url=cfg.stream_base_url,
        architecture=cfg.architecture,
        format=fmt,
    )
    return source.open_stream(fetcher, spec, cfg.insecure, say)


@dataclass(frozen=True)
class _Ready:
    """What the pre-write step opened and checked: the write may begin."""

    target: blockdev.Target
    saved: List[gpt.PartitionEntry]
    src: source.ImageSource
    limit: int
    ign: Optional[bytes]


def _prepare(
    cfg: InstallConfig,
    fetcher: Fetcher,
    stack: ExitStack,
    say: Say,
    expect: Optional[deadman.DeadmanConfig],
) -> _Ready:
    """Everything checked before the first write; under a dead-man switch (`expect`) also the
    memory, the target's identity and the signature as far as it is known before the data."""
    if expect is not None:
        have = prewrite.check_memory(expect.min_memory)
        say(f"Memory: {have >> 20} MiB available (needs {expect.min_memory >> 20} MiB)")
    ign = load_ignition(cfg, fetcher)
    if expect is not None and expect.target is not None:
        found = prewrite.check_identity(cfg.dest_device, expect.target)
        say(f"Target {cfg.dest_device} is the planned disk (/dev/{found.name}, {found.size} bytes)")
    target = blockdev.open_target(cfg.dest_device)
    stack.callback(target.close)
    disks.require_not_root_disk(target.path)
    if target.path != cfg.dest_device:
        say(f"Installing to {target.path} ({cfg.dest_device})")
    saved = gpt.select_saved(
        gpt.read_table(target.path) if cfg.save else None, cfg.save, target.sector_size
    )
    src = _open_source(cfg, fetcher, target.sector_size, say)
    stack.callback(src.close)
    if expect is not None:
        prewrite.check_signature(src, Keyring.default(cfg.keyrings), say)
    limit = gpt.first_saved_offset(saved, target.sector_size) or target.size
    if saved and src.image_size is not None and src.image_size > limit:
        gpt.check_collision(saved, src.image_size, target.sector_size)
    if src.image_size is not None and src.image_size > limit:
        raise TargetError(
            f"image ({src.image_size} bytes) is larger than {target.path} "
            f"({limit} bytes usable); nothing was written",
            hint="use a bigger disk",
        )
    gpt.dry_run(saved, target.size)
    return _Ready(target, saved, src, limit, ign)


def install(cfg: InstallConfig, say: Say, guard: Optional[deadman.Guard] = None) -> None:
    """Install per `cfg`. Raises a NestosError; InstallFailed once the disk was written.

    Under a dead-man switch (`guard`) the first write waits for the guard's claim: once the
    deadline or a failed check decided to go back to the old system, nothing is written."""
    if cfg.copy_network and not cfg.network_dir.is_dir():
        raise ConfigError(f"network directory {cfg.network_dir} does not exist")
    decompress.probe_in_background()  # overlaps `xz --version` with the checks below
    with ExitStack() as stack:
        fetcher = _make_fetcher(cfg, stack)
        stack.callback(fetcher.close)
        r = _prepare(cfg, fetcher, stack, say, guard.config if guard else None)
        if guard is not None:
            guard.begin_write()
            say("Pre-write checks passed; writing (the dead-man switch is disarmed)")
        try:
            _write(cfg, r.target, r.src, r.saved, r.limit, r.ign, say)
        except Exception as e:  # any failure after writing began must wipe the disk
            _fail(cfg, r.target, r.saved, say, e)
            raise InstallFailed("install failed") from e
    say("Install complete.")


def _fail(
    cfg: InstallConfig,
    target: blockdev.Target,
    saved: List[gpt.PartitionEntry],
    say: Say,
    err: BaseException,
) -> None:
    say(f"\nError: {err}\n")
    if cfg.preserve_on_error:
        say("Preserving partition table as requested")
        return
    say("Resetting partition table")
    try:
        _wipe_partition_table(target)
        if saved:
            gpt.write_saved_only(target.path, saved)
        target.fsync()
        blockdev.drop_partitions(target)
    except (NestosError, OSError) as e2:
        say(f"Error: could not reset the partition table of {target.path}: {e2}")


def _wipe_partition_table(target: blockdev.Target) -> None:
    """Leave the disk empty and unbootable: a blank GPT whose backup header sits at the disk's
    real end (so firmware cannot pick up a stale backup GPT of an earlier install), then zero
    the whole first MiB (boot code, protective MBR, primary GPT)."""
    gpt.write_blank(target.path)
    blockdev.zero_head(target)


def _write(
    cfg: InstallConfig,
    target: blockdev.Target,
    src: source.ImageSource,
    saved: List[gpt.PartitionEntry],
    limit: int,
    ign: Optional[bytes],
    say: Say,
) -> None:
    # Until verification passed, the disk carries no partition table (or only the saved
    # partitions), never a bootable first MiB.
    blockdev.drop_partitions(target)
    blockdev.clear_for_write(target)
    if saved:
        gpt.write_saved_only(target.path, saved)
        target.fsync()
    head = _stream_verified(cfg, target, src, saved, limit, say)
    writer.commit_head(target, head)
    if saved:
        table = gpt.read_table(target.path)
        image_indexes = [e.index for e in table.entries] if table is not None else []
        moves = gpt.renumber(image_indexes, saved)
        for new, e in moves:
            say(f'Saving partition {e.index} ("{e.name}") to new partition {new}')
        gpt.merge_saved(target.path, moves)
    target.fsync()
    parts = blockdev.reread_partitions(target)
    if ign is not None or cfg.boot_edits or cfg.copy_network:
        dev, fstype = blockdev.find_by_label(parts, "boot", target.path)
        target.release_exclusive()
        blockdev.with_mounted(dev, fstype, lambda boot: _postprocess(cfg, boot, ign, say))
    target.fsync()


def _stream_verified(
    cfg: InstallConfig,
    target: blockdev.Target,
    src: source.ImageSource,
    saved: List[gpt.PartitionEntry],
    limit: int,
    say: Say,
) -> bytes:
    """Stream the image onto the target (raw bytes teed to the signature verifier and sha256)
    and return the held-back first MiB once the signature and digest checked out."""
    keyring = Keyring.default(cfg.keyrings)
    sha = hashlib.sha256()
    with ExitStack() as stack:
        verifier = None
        if src.signature is not None:
            verifier = stack.enter_context(
                SignatureVerifier(src.signature, keyring, defer_key_import=True)
            )
        progress = stack.enter_context(Progress("image", src.length, cfg.progress))
        sinks: List[Callable[[bytes], object]] = [progress.on_chunk]
        if src.sha256:  # hashed only when someone (the stream) tells us what to expect
            sinks.append(sha.update)
        if verifier is not None:
            sinks.insert(0, verifier.feed)
        raw = TeeReader(src.reader, sinks)
        with decompressed(raw) as image:
            head = writer.stream_image(
                image,
                target,
                limit=limit,
                sector_size=target.sector_size,
                limit_error=_limit_error(saved, target, limit),
            )
        # The image (all but the held-back first MiB) goes to stable storage while the
        # verdict is worked out: the flush is I/O the CPU would otherwise idle through.
        flushed = _fsync_in_background(target)
        try:
            if verifier is not None:
                verified = verifier.finish()
                say(f"Verified signature of {src.name} by {verified.username or verified.key_id}")
            if src.sha256 and sha.hexdigest() != src.sha256.lower():
                raise HashMismatch(
                    f"sha256 mismatch for {src.name}: computed "
                    f"{sha.hexdigest()} but the stream says {src.sha256}"
                )
        finally:
            flushed()
    return head


def _fsync_in_background(target: blockdev.Target) -> Callable[[], None]:
    """Start target.fsync() in a thread; the returned function waits for it (and raises)."""
    errors: List[BaseException] = []

    def run() -> None:
        try:
            target.fsync()
        except BaseException as e:  # re-raised by wait() in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name="nestos-fsync", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if errors:
            raise errors[0]

    return wait


def _limit_error(saved: List[gpt.PartitionEntry], target: blockdev.Target, limit: int):  # type: ignore[no-untyped-def]
    if not saved:
        return None
    first = min(saved, key=lambda e: e.start)

    def make(offset: int) -> Exception:
        return TargetError(
            f'collision with partition {first.index} ("{first.name}") '
            f"at offset {first.start * target.sector_size}"
        )

    return make


def _postprocess(cfg: InstallConfig, boot: Path, ign: Optional[bytes], say: Say) -> None:
    if ign is not None:
        say("Writing Ignition config")
        ignition.write_config(boot, ign, None)
    if cfg.boot_edits:
        bootconfig.apply(boot, cfg.boot_edits, say)
    if cfg.copy_network:
        say(f"Copying networking configuration from {cfg.network_dir}")
        ignition.copy_network(boot, cfg.network_dir, say)
    os.sync()


def describe(cfg: InstallConfig) -> str:
    """The text of `install --plan`: what would be done, without writing or fetching."""
    lines = ["Install plan (nothing will be written):"]
    lines += _describe_target(cfg.dest_device)
    lines.append(f"  source:      {_describe_source(cfg)}")
    lines.append(f"  signature:   {'optional (--insecure)' if cfg.insecure else 'required'}")
    ign = cfg.ignition_file or cfg.ignition_url
    lines.append(f"  ignition:    {ign or 'none'}")
    if cfg.platform:
        lines.append(f"  platform:    {cfg.platform}")
    lines += [f"  console:     {c}" for c in cfg.console]
    lines += [f"  append karg: {k}" for k in cfg.append_karg]
    lines += [f"  delete karg: {k}" for k in cfg.delete_karg]
    if cfg.firstboot_args:
        lines.append(f"  first boot:  {cfg.firstboot_args}")
    if cfg.copy_network:
        lines.append(f"  network:     copy keyfiles from {cfg.network_dir}")
    if cfg.save:
        lines.append(f"  save:        {cfg.save}")
        lines += _describe_saved(cfg.dest_device, cfg.save)
    return "\n".join(lines)


def _describe_target(dev: str) -> List[str]:
    try:
        real = disks.canonical_device(dev)
        size = Path(f"/sys/class/block/{os.path.basename(real)}/size")
        sectors = int(size.read_text()) if size.exists() else 0
        lines = [f"  target:      {dev} -> {real} ({sectors * 512} bytes)"]
        busy = disks.busy_report(real)
        if busy:
            lines.append(f"  WARNING:     target is busy: {'; '.join(busy)}")
        return lines
    except TargetError as e:
        return [f"  target:      {dev} ({e})"]


def _describe_source(cfg: InstallConfig) -> str:
    if cfg.image_file:
        return f"file {cfg.image_file} (signature {cfg.image_file}.sig)"
    if cfg.image_url:
        return f"URL {cfg.image_url} (signature {signature_url(cfg.image_url)})"
    return f"stream {cfg.stream or '2403-LTS'} {cfg.architecture} metal" + (
        f" from {cfg.stream_base_url}" if cfg.stream_base_url else ""
    )


def _describe_saved(dev: str, save: gpt.PartitionFilter) -> List[str]:
    try:
        table = gpt.read_table(disks.canonical_device(dev))
        return [
            f'    keeps partition {ent.index} ("{ent.name}") at sector {ent.start}'
            for ent in gpt.select_saved(table, save, table.sector_size if table else 512)
        ]
    except Exception as err:  # the plan reports, never fails on a read problem
        return [f"    (could not read partition table: {err})"]
