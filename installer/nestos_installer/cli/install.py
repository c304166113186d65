"""CLI: `install` — flags and config files become an InstallConfig; one call does the work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click
from click.core import ParameterSource

from nestos_installer import config as cfgfile
from nestos_installer import deadman
from nestos_installer.bootconfig import Console
from nestos_installer.diskselect import resolve_dest
from nestos_installer.download import host_architecture
from nestos_installer.errors import UsageError
from nestos_installer.fetch import FetchRetries
from nestos_installer.gpt import PartitionFilter
from nestos_installer.ignition import IgnitionHash
from nestos_installer.install import (
    DEFAULT_NETWORK_DIR,
    InstallConfig,
    check_local_inputs,
    describe,
    install,
)
from nestos_installer.pipeline.progress import ProgressMode

_ADV = "Advanced: "


_SOURCE_OPTIONS = [
    click.option(
        "-c",
        "--config-file",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="YAML config file with install options (repeatable)",
    ),
    click.option("-s", "--stream", help="NestOS stream to install (e.g. 2403-LTS)"),
    click.option("-u", "--image-url", help="Image URL; its signature is URL + .sig"),
    click.option(
        "-f",
        "--image-file",
        type=click.Path(dir_okay=False),
        help="Local image file; its signature is FILE.sig",
    ),
]
_IGNITION_OPTIONS = [
    click.option(
        "-i",
        "--ignition-file",
        "--ignition",
        type=click.Path(dir_okay=False),
        help="Embed this Ignition config in the installed system",
    ),
    click.option("-I", "--ignition-url", help="Fetch and embed an Ignition config"),
    click.option(
        "--ignition-hash",
        metavar="DIGEST",
        help="Expected digest of the config: sha256-<hex> or sha512-<hex>",
    ),
    click.option(
        "--ignition-ca",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="PEM CA bundle also trusted for HTTPS fetches (repeatable)",
    ),
]
_SYSTEM_OPTIONS = [
    click.option("-a", "--architecture", help="Target CPU architecture [default: this host]"),
    click.option("-p", "--platform", help="Ignition platform ID (e.g. qemu, openstack)"),
    click.option(
        "--console",
        multiple=True,
        metavar="SPEC",
        help="Kernel and GRUB console, e.g. ttyS0,115200n8 (repeatable)",
    ),
    click.option(
        "--firstboot-args", metavar="ARGS", help="Kernel arguments for the first boot only"
    ),
    click.option(
        "--append-karg",
        multiple=True,
        metavar="ARG",
        help="Append a default kernel argument (repeatable)",
    ),
    click.option(
        "--delete-karg",
        multiple=True,
        metavar="ARG",
        help="Delete a default kernel argument (repeatable)",
    ),
    click.option(
        "-n",
        "--copy-network",
        is_flag=True,
        help="Copy NetworkManager keyfiles to the installed system",
    ),
    click.option(
        "--network-dir",
        type=click.Path(file_okay=False),
        help=f"Keyfile directory for -n [default: {DEFAULT_NETWORK_DIR}]",
    ),
    click.option(
        "--save-partlabel",
        multiple=True,
        metavar="GLOB",
        help="Keep partitions whose GPT name matches GLOB (repeatable)",
    ),
    click.option(
        "--save-partindex",
        multiple=True,
        metavar="RANGE",
        help="Keep partitions by number: N, M-N, M-, -N (repeatable)",
    ),
]
_ADVANCED_OPTIONS = [
    click.option("--offline", is_flag=True, help=_ADV + "Use only a local image"),
    click.option(
        "--insecure",
        is_flag=True,
        help=_ADV + "Allow an image without signature (never a bad one)",
    ),
    click.option(
        "--insecure-ignition",
        is_flag=True,
        help=_ADV + "Allow an Ignition URL over http without hash",
    ),
    click.option("--stream-base-url", metavar="URL", help=_ADV + "Base URL of the stream metadata"),
    click.option(
        "--keyring",
        multiple=True,
        type=click.Path(dir_okay=False),
        help=_ADV + "Also trust signatures by the OpenPGP public keys in "
        "FILE, e.g. a mirror's or your own build's key (repeatable)",
    ),
    click.option(
        "--preserve-on-error",
        is_flag=True,
        help=_ADV + "Don't wipe the partition table on failure",
    ),
    click.option(
        "--fetch-retries",
        metavar="N",
        help=_ADV + "Retries for network fetches: a number or 'infinite'",
    ),
    click.option(
        "--progress",
        type=click.Choice([m.value for m in ProgressMode]),
        help=_ADV + "Progress display [default: auto]",
    ),
    click.option(
        "--plan", is_flag=True, help="Print what would be done (source, target, kargs) and stop"
    ),
]


def _opts(f: Any) -> Any:
    for o in reversed(_SOURCE_OPTIONS + _IGNITION_OPTIONS + _SYSTEM_OPTIONS + _ADVANCED_OPTIONS):
        f = o(f)
    return f


_NAMES = {k.replace("-", "_"): k for k in cfgfile.ALL_KEYS}


def _cli_layer(ctx: click.Context, params: Dict[str, Any]) -> Dict[str, cfgfile.Value]:
    layer: Dict[str, cfgfile.Value] = {}
    for name, key in _NAMES.items():
        if name == "dest_device":
            if params.get("dest_device"):
                layer[key] = params["dest_device"]
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = params[name]
        layer[key] = list(value) if isinstance(value, tuple) else value
    return layer


def _s(values: Dict[str, cfgfile.Value], key: str) -> Optional[str]:
    v = values.get(key)
    return v if isinstance(v, str) and v else None


def _l(values: Dict[str, cfgfile.Value], key: str) -> Tuple[str, ...]:
    v = values.get(key, [])
    return tuple(v) if isinstance(v, list) else ()


def build_config(values: Dict[str, cfgfile.Value]) -> InstallConfig:
    dest = _s(values, "dest-device")
    if not dest:
        raise UsageError(
            "destination device must be specified",
            hint="e.g. nestos-installer install /dev/sda, or dest-device in a config file",
        )
    ih = _s(values, "ignition-hash")
    nd = _s(values, "network-dir")
    return InstallConfig(
        dest_device=dest,
        image_file=Path(v) if (v := _s(values, "image-file")) else None,
        image_url=_s(values, "image-url"),
        stream=_s(values, "stream"),
        stream_base_url=_s(values, "stream-base-url"),
        architecture=_s(values, "architecture") or host_architecture(),
        platform=_s(values, "platform"),
        offline=bool(values.get("offline")),
        ignition_file=Path(v) if (v := _s(values, "ignition-file")) else None,
        ignition_url=_s(values, "ignition-url"),
        ignition_hash=IgnitionHash.parse(ih) if ih else None,
        ignition_ca=tuple(Path(p) for p in _l(values, "ignition-ca")),
        insecure_ignition=bool(values.get("insecure-ignition")),
        firstboot_args=_s(values, "firstboot-args"),
        append_karg=_l(values, "append-karg"),
        delete_karg=_l(values, "delete-karg"),
        console=tuple(Console.parse(c) for c in _l(values, "console")),
        copy_network=bool(values.get("copy-network")),
        network_dir=Path(nd) if nd else DEFAULT_NETWORK_DIR,
        save=PartitionFilter.parse(_l(values, "save-partlabel"), _l(values, "save-partindex")),
        insecure=bool(values.get("insecure")),
        keyrings=tuple(Path(p) for p in _l(values, "keyring")),
        preserve_on_error=bool(values.get("preserve-on-error")),
        fetch_retries=FetchRetries.parse(_s(values, "fetch-retries") or "0"),
        progress=ProgressMode(_s(values, "progress") or "auto"),
    )


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("install")
@_opts
@click.argument("dest_device", required=False, metavar="[DEST_DEVICE]")
def install_cmd(**params: Any) -> None:
    """Install NestOS to a disk.

    DEST_DEVICE is a disk (/dev/sda, /dev/disk/by-id/...) or an automatic choice
    such as auto:type=nvme,min-size=20G (exactly one disk must match).
    """
    ctx = click.get_current_context()
    files: List[Path] = [Path(p) for p in params["config_file"]]
    layers = [(str(p), cfgfile.parse_file(p)) for p in files]
    if files:
        click.echo(f"Running with config files: {' '.join(map(str, files))}", err=True)
    layers.append(("the command line", cfgfile.check(_cli_layer(ctx, params))))
    values = cfgfile.merge(layers)
    if _s(values, "dest-device"):
        values["dest-device"] = resolve_dest(str(values["dest-device"]), _say)
    cfg = build_config(values)
    if params["plan"]:
        check_local_inputs(cfg)
        click.echo(describe(cfg))
        return
    # autoinstall passes the dead-man switch's guard as the context object
    guard = ctx.obj if isinstance(ctx.obj, deadman.Guard) else None
    install(cfg, _say, guard)
    os.sync()
