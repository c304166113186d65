"""Verbs behind `iso ...` and `pxe ...`: open the media, compute the edit, write the output.

Imports `live.*`, `kargs`, `errors`; never prints. Results go back as bytes/strings.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import BinaryIO, Iterator, List, Optional, Sequence, Union

from nestos_installer.errors import ImageFormatError, NestosError, NotFound, UsageError
from nestos_installer.kargs import edit_kargs
from nestos_installer.live import outputs
from nestos_installer.live.embed import CONFIG_IGN, NETWORK_DIR, LiveIso, Write, network_files
from nestos_installer.live.initrd import Initrd, extract
from nestos_installer.untrusted import SMALL_FILE_MAX, read_file, require_utf8

ALREADY_IGN = "This ISO image already has an embedded Ignition config; use -f to force."
ALREADY_NET = "This ISO image already has embedded network settings; use -f to force."
NO_NET_FEATURE = "This OS image does not support customizing network settings."


@contextmanager
def open_iso(path: str) -> Iterator[LiveIso]:
    with open(path, "rb") as fp:
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
            raise UsageError(ALREADY_IGN)
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
            raise UsageError(f"multiple input files named '{name}'")
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
            raise UsageError(NO_NET_FEATURE)
        initrd = iso.read_initrd()
        if network_files(initrd) and not force:
            raise UsageError(ALREADY_NET)
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
            name = os.path.basename(p).encode()
            chunks.append(head + b"########## " + name + b" ##########\n" + initrd.members[p])
        return b"".join(chunks)
    os.makedirs(directory, exist_ok=True)
    written = []
    for p in files:
        dest = os.path.join(directory, os.path.basename(p))
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(initrd.members[p])
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
    stem = os.path.splitext(os.path.basename(path))[0]
    written = []
    with open_iso(path) as iso:
        try:
            files = iso.iso.listdir("IMAGES/PXEBOOT")
        except NotFound as e:
            raise ImageFormatError("Unrecognized NestOS ISO image.") from e
        for f in files:
            if f.is_dir:
                continue
            name = os.path.basename(f.path).lower()
            dest = os.path.join(output_dir, f"{stem}-{name}")
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as out:
                outputs._copy_range(iso.fp, out, f.offset, f.offset + f.length)
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
    if path == "-":
        if stdin is None:
            raise ValueError("stdin stream required for '-'")
        return Initrd.from_bytes(stdin.read())
    return Initrd.from_bytes(_read(path))


def dev_extract_initrd(initrd: Initrd, directory: str, globs: Sequence[str]) -> List[str]:
    from nestos_installer.live.initrd import glob_match

    names = [p for p in initrd.paths() if glob_match(p, globs)]
    written: List[str] = extract(initrd, directory, names)
    return written


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
