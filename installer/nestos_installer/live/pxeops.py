"""Verbs behind `pxe ignition|network wrap|unwrap`: small xz cpio archives for PXE initrds.

Imports `live.*` and `errors`; never prints.
"""

from __future__ import annotations

from typing import BinaryIO, List, Optional, Sequence, Union

from nestos_installer.errors import NotFound
from nestos_installer.live import outputs
from nestos_installer.live.embed import CONFIG_IGN, NETWORK_DIR
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.isoops import (
    check_keyfile_names,
    network_extract_from,
    read_initrd_file,
    read_keyfile,
)


def ignition_wrap(config: bytes, output: str, stdout: Optional[BinaryIO]) -> None:
    initrd = Initrd({CONFIG_IGN: config})
    outputs.write_bytes_output(initrd.to_xz(), output, stdout)


def ignition_unwrap(path: str, stdin: Optional[BinaryIO]) -> bytes:
    data: Optional[bytes] = read_initrd_file(path, stdin).get(CONFIG_IGN)
    if data is None:
        raise NotFound("couldn't find Ignition config in archive")
    return data


def network_wrap(keyfiles: Sequence[str], output: str, stdout: Optional[BinaryIO]) -> None:
    names = check_keyfile_names(keyfiles)
    initrd = Initrd()
    for name, path in zip(names, keyfiles):
        initrd.add(NETWORK_DIR + name, read_keyfile(path))
    outputs.write_bytes_output(initrd.to_xz(), output, stdout)


def network_unwrap(
    path: str, directory: Optional[str], stdin: Optional[BinaryIO]
) -> Union[List[str], bytes]:
    res: Union[List[str], bytes] = network_extract_from(read_initrd_file(path, stdin), directory)
    return res
