"""Verbs behind `iso ...` and `pxe ...`: open the media, compute the edit, write the output.

Imports `live.*`, `cpio`, `kargs`, `outputs`, `errors`; never prints. Results go back as bytes or
strings.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from typing import BinaryIO, Iterator, List, Optional, Sequence, Union

from nestos_installer import cpio
from nestos_installer.errors import (
    ImageFormatError,
    InputRefused,
    NestosError,
    NotFound,
    UsageError,
)
from nestos_installer.kargs import edit_kargs
from nestos_installer.live import outputs
from nestos_installer.live.embed import CONFIG_IGN, NETWORK_DIR, LiveIso, Write, network_files
from nestos_installer.live.initrd import MAX_INFLATED, Initrd, extract, glob_match
from nestos_installer.live.iso9660 import UNRECOGNIZED
from nestos_installer.outputs import new_file, write_file
from nestos_installer.untrusted import SMALL_FILE_MAX, read_file, require_utf8

ALREADY_IGN = "This ISO image already has an embedded Ignition config; use -f to force."
ALREADY_NET = "This ISO image already has embedded network settings; use -f to force."
NO_NET_FEATURE = "This OS image does not support customizing network settings."
MAX_INITRD_FILE = 2 * MAX_INFLATED  # an initrd file (or stdin) we read into memory


def open_image(path: str) -> BinaryIO:
    """Open an ISO or initrd for reading: a regular file or a block device. A FIFO, socket or
    character device is refused before the first read, which could block or never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise UsageError(f"{path} is not a regular file or block device")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_iso(path: str) -> Iterator[LiveIso]:
    with open_image(path) as fp:
        iso = LiveIso(fp)
        try:
            yield iso
        finally:
            iso.iso.close()


def _finish(
    path: str, writes: List[Write], output: Optional[str], stdout: Optional[BinaryIO]
) -> None:
    outputs.apply(path, writes, output, stdout)


def ignition_embed(
    path: str, config: bytes, force: bool, output: Optional[str], stdout: Optional[BinaryIO] = None
) -> None:
    with open_iso(path) as iso:
        initrd = iso.read_initrd()
        if initrd.get(CONFIG_IGN) is not None and not force:
            raise InputRefused(ALREADY_IGN)
        initrd.add(CONFIG_IGN, config)
        writes = iso.initrd_writes(initrd)
    _finish(path, writes, output, stdout)


def ignition_show(path: str) -> bytes:
    with open_iso(path) as iso:
        data: Optional[bytes] = iso.read_initrd().get(CONFIG_IGN)
    if data is None:
        raise NotFound("No embedded Ignition config.")
    return data


def ignition_remove(path: str, output: Optional[str], stdout: Optional[BinaryIO] = None) -> None:
    with open_iso(path) as iso:
        initrd = iso.read_initrd()
        initrd.remove(CONFIG_IGN)
        writes = iso.initrd_writes(initrd)
    _finish(path, writes, output, stdout)


def keyfile_name(path: str) -> str:
    """A keyfile's member name in the initrd: its base name, which must be UTF-8."""
    return require_utf8(os.path.basename(path), "keyfile name")


def read_keyfile(path: str) -> bytes:
    return read_file(path, "NetworkManager keyfile", limit=SMALL_FILE_MAX, error=NestosError)


def check_keyfile_names(keyfiles: Sequence[str]) -> List[str]:
    names: List[str] = []
    for k in keyfiles:
        name = keyfile_name(k)
        if name in names:
            raise InputRefused(f"multiple input files named '{name}'")
        names.append(name)
    return names


def network_embed(
    path: str,
    keyfiles: Sequence[str],
    force: bool,
    output: Optional[str],
    stdout: Optional[BinaryIO] = None,
) -> None:
    names = check_keyfile_names(keyfiles)
    contents = [read_keyfile(k) for k in keyfiles]
    with open_iso(path) as iso:
        if not iso.features.live_initrd_network:
            raise InputRefused(NO_NET_FEATURE)
        initrd = iso.read_initrd()
        if network_files(initrd) and not force:
            raise InputRefused(ALREADY_NET)
        for p in network_files(initrd):
            initrd.remove(p)
        for name, data in zip(names, contents):
            initrd.add(NETWORK_DIR + name, data)
        writes = iso.initrd_writes(initrd)
    _finish(path, writes, output, stdout)


def network_extract_from(initrd: Initrd, directory: Optional[str]) -> Union[List[str], bytes]:
    """Files to `directory` (returns paths) or one text blob with headers (returns bytes)."""
    files = network_files(initrd)
    if not files:
        raise NotFound("No embedded network settings.")
    if directory is None:
        chunks = []
        for i, p in enumerate(files):
            head = b"\n" if i else b""
            name = cpio.encode_name(os.path.basename(p))
            chunks.append(head + b"########## " + name + b" ##########\n" + initrd.members[p])
        return b"".join(chunks)
    os.makedirs(directory, exist_ok=True)
    written = []
    for p in files:
        dest = os.path.join(directory, cpio.check_member_path(os.path.basename(p)))
        write_file(dest, initrd.members[p], secret=True)  # keyfiles may hold Wi-Fi passwords
        written.append(dest)
    return written


def network_extract(path: str, directory: Optional[str]) -> Union[List[str], bytes]:
    with open_iso(path) as iso:
        initrd = iso.read_initrd()
    return network_extract_from(initrd, directory)


def network_remove(path: str, output: Optional[str], stdout: Optional[BinaryIO] = None) -> None:
    with open_iso(path) as iso:
        initrd = iso.read_initrd()
        for p in network_files(initrd):
            initrd.remove(p)
        writes = iso.initrd_writes(initrd)
    _finish(path, writes, output, stdout)


def kargs_modify(
    path: str,
    append: Sequence[str],
    delete: Sequence[str],
    replace: Sequence[str],
    output: Optional[str],
    stdout: Optional[BinaryIO] = None,
) -> None:
    with open_iso(path) as iso:
        new = edit_kargs(iso.current_kargs(), append, delete, replace)
        writes = iso.kargs_writes(new)
    _finish(path, writes, output, stdout)


def kargs_reset(path: str, output: Optional[str], stdout: Optional[BinaryIO] = None) -> None:
    with open_iso(path) as iso:
        writes = iso.kargs_writes(iso.require_kargs().default)
    _finish(path, writes, output, stdout)


def kargs_show(path: str, default: bool) -> str:
    with open_iso(path) as iso:
        res: str = iso.require_kargs().default if default else iso.current_kargs()
    return res


def iso_reset(path: str, output: Optional[str], stdout: Optional[BinaryIO] = None) -> None:
    with open_iso(path) as iso:
        writes = iso.initrd_writes(Initrd())
        if iso.kargs is not None:
            writes += iso.kargs_writes(iso.kargs.default)
    _finish(path, writes, output, stdout)


def extract_pxe(path: str, output_dir: str) -> List[str]:
    """Copy IMAGES/PXEBOOT/* to output_dir/<iso stem>-<name>; output_dir is created."""
    stem = os.path.splitext(os.path.basename(path))[0]
    written = []
    with open_iso(path) as iso:
        try:
            files = iso.iso.listdir("IMAGES/PXEBOOT")
        except NotFound as e:
            raise ImageFormatError(UNRECOGNIZED) from e
        os.makedirs(output_dir, exist_ok=True)
        for f in files:
            if f.is_dir:
                continue
            name = os.path.basename(f.path).lower()
            dest = os.path.join(output_dir, f"{stem}-{name}")
            with new_file(dest) as out:
                iso.iso.copy_file(f, out.file)
            written.append(dest)
    return written


def dev_show_iso(path: str, what: Optional[str]) -> object:
    with open_iso(path) as iso:
        if what == "ignition":
            a = iso.initrd_area
            return {"offset": a.offset, "length": a.length}
        if what == "kargs":
            return iso.kargs.to_json() if iso.kargs is not None else None
        return {"header": {"descriptors": iso.iso.descriptors}, "records": iso.iso.records()}


def read_initrd_file(path: str, stdin: Optional[BinaryIO] = None) -> Initrd:
    """The initrd in file `path` (a regular file or block device), or on `stdin` for `-`."""
    if path == "-":
        if stdin is None:
            raise ValueError("stdin stream required for '-'")
        return Initrd.from_bytes(_read_capped(stdin, "stdin"))
    with open_image(path) as f:
        return Initrd.from_bytes(_read_capped(f, path))


def _read_capped(f: BinaryIO, name: str) -> bytes:
    """All of `f`, refused (before reading, where the size is known) beyond MAX_INITRD_FILE."""
    too_big = ImageFormatError(f"{name} is larger than {MAX_INITRD_FILE >> 20} MiB: not an initrd")
    try:
        known = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):  # an in-memory stream: no file descriptor
        known = 0
    if known > MAX_INITRD_FILE:
        raise too_big
    data = f.read(MAX_INITRD_FILE + 1)
    if len(data) > MAX_INITRD_FILE:
        raise too_big
    return data


def dev_extract_initrd(initrd: Initrd, directory: str, globs: Sequence[str]) -> List[str]:
    names = [p for p in initrd.paths() if glob_match(p, globs)]
    written: List[str] = extract(initrd, directory, names)
    return written


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
