"""`iso customize` / `pxe customize`: live/dest Ignition configs (spec 3.3.0, gzip+base64 data
URLs) and installer files. Imports `live.*`, `config`, `ignition`, `kargs`, `cabundle`, `untrusted`,
`autoinstall`, `run`, `errors` and PyYAML; never prints (messages are returned)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Tuple

import yaml

from nestos_installer import config, ignition, untrusted
from nestos_installer.autoinstall import Cmdline
from nestos_installer.cabundle import check_ca_bundle
from nestos_installer.errors import (
    ConfigError,
    ImageFormatError,
    InputRefused,
    NestosError,
    ToolMissing,
    UsageError,
)
from nestos_installer.kargs import check_arg, edit_kargs
from nestos_installer.live import outputs
from nestos_installer.live.embed import CONFIG_IGN, NETWORK_DIR, LiveIso, network_files
from nestos_installer.live.initrd import Initrd
from nestos_installer.live.isoops import keyfile_name, read_keyfile
from nestos_installer.live.metadata import Features
from nestos_installer.run import have_tool, run

IGN_VERSION_RE = re.compile(r"^3\.[0-5]\.0$")
GENERATED_VERSION = "3.3.0"
DEST_IGN = "/etc/nestos/dest.ign"
INSTALLER_D = "/etc/nestos/installer.d"
DOC_URL = "https://docs.openeuler.org/en/docs/24.03_LTS/server/cloud/nestos/nestos/overview.html"
CA_DIR = "/etc/nestos/installer-ca"
"""Where the live system gets the --ignition-ca bundles that its installer run trusts."""
INITRD_MAX = 1 << 30
"""A live initramfs given to `pxe customize` (a real one is about 100 MiB)."""
LIVE_STAMPS = ("etc/nestos-live-initramfs", "etc/coreos-live-initramfs")
PXE_FEATURES = ("etc/nestos/features.json", "etc/coreos/features.json")
PXE_KARGS_MSG = (
    "PXE configuration must include kernel arguments:\n"
    "\tignition.firstboot ignition.platform.id=metal"
)

NO_NET = "This OS image does not support customizing network settings."
NO_INSTALLER = "This OS image does not support customizing installer configuration."
NO_CONSOLE = "This OS image does not support customizing the destination console."
NO_LIVE_KARGS = "This OS image does not support customizing live kernel arguments."
ALREADY = "This ISO image is already customized; use -f to force."
NO_DEVICE = "--dest-ignition needs a destination device: the installer would stop at boot"
NO_DEVICE_HINT = (
    "give --dest-device, dest-device in an --installer-config file, "
    "or --live-karg-append nestos.inst.install_dev=/dev/..."
)
PXE_NO_DEVICE_MSG = (
    "Note: no destination device given: the PXE configuration must include the kernel "
    "argument nestos.inst.install_dev=/dev/..."
)


@dataclass(frozen=True)
class CustomizeOptions:
    """Flags common to `iso customize` and `pxe customize` (+ the ISO-only live kargs)."""

    dest_ignition: Tuple[str, ...] = ()
    dest_device: Optional[str] = None
    dest_console: Tuple[str, ...] = ()
    dest_karg_append: Tuple[str, ...] = ()
    dest_karg_delete: Tuple[str, ...] = ()
    network_keyfile: Tuple[str, ...] = ()
    network_nmstate: Tuple[str, ...] = ()
    ignition_ca: Tuple[str, ...] = ()
    pre_install: Tuple[str, ...] = ()
    post_install: Tuple[str, ...] = ()
    installer_config: Tuple[str, ...] = ()
    live_ignition: Tuple[str, ...] = ()
    live_karg_append: Tuple[str, ...] = ()
    live_karg_delete: Tuple[str, ...] = ()
    live_karg_replace: Tuple[str, ...] = ()

    @classmethod
    def from_cli(cls, kw: Mapping[str, Any]) -> CustomizeOptions:
        vals: Dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            v = kw.get(name)
            if name == "dest_device":
                vals[name] = v or None
            else:
                vals[name] = tuple(v or ())
        return cls(**vals)

    def __post_init__(self) -> None:
        """Judged from the options alone, as `install` judges its own: the --dest-* values by
        the installer config schema, live kernel arguments as kernel arguments."""
        config.check(self.dest_settings())
        for arg in (*self.live_karg_append, *self.live_karg_delete, *self.live_karg_replace):
            check_arg(arg)

    def dest_settings(self) -> Dict[str, Any]:
        """The installer config keys the --dest-* options give (all but --dest-ignition)."""
        inst: Dict[str, Any] = {}
        if self.dest_device:
            inst["dest-device"] = self.dest_device
        if self.dest_console:
            inst["console"] = list(self.dest_console)
        if self.dest_karg_append:
            inst["append-karg"] = list(self.dest_karg_append)
        if self.dest_karg_delete:
            inst["delete-karg"] = list(self.dest_karg_delete)
        return inst

    @property
    def live_kargs(self) -> bool:
        return bool(self.live_karg_append or self.live_karg_delete or self.live_karg_replace)


@dataclass
class Result:
    initrd: Initrd
    messages: List[str] = field(default_factory=list)
    installer: Dict[str, config.Value] = field(default_factory=dict)
    """The installer config the live system will run with: the user's files, then ours."""


def resource(data: bytes) -> Dict[str, Any]:
    """An Ignition resource carrying `data` inline, gzip-compressed and base64-encoded."""
    gz = gzip.compress(data, compresslevel=9, mtime=0)
    return {"compression": "gzip", "source": "data:;base64," + base64.b64encode(gz).decode()}


def read_ignition(path: str) -> Tuple[bytes, Dict[str, Any]]:
    """A user Ignition config (bytes, object); only spec 3.0.0-3.5.0 JSON objects are accepted."""
    where = f"parsing Ignition config {path}"
    data = ignition.read_config(Path(path), "Ignition config")
    obj = untrusted.parse_json(data, where)
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: config is not a JSON object")
    ign = obj.get("ignition")
    version = ign.get("version") if isinstance(ign, dict) else None
    if not isinstance(version, str) or not IGN_VERSION_RE.match(version):
        raise ConfigError(f"{where}: unsupported config version")
    return data, obj


def parse_ignition(path: str) -> Dict[str, Any]:
    return read_ignition(path)[1]


def parse_installer_config(path: str) -> Tuple[bytes, Dict[str, config.Value]]:
    """An --installer-config file (bytes, values), by the one parser `install -c` uses."""
    return config.load_file(Path(path), "installer config")


def nmstate_keyfiles(path: str) -> List[Tuple[str, bytes]]:
    """NetworkManager keyfiles generated from an nmstate document by `nmstatectl gc`."""
    if not have_tool("nmstatectl"):
        raise ToolMissing("nmstate is not available; use --network-keyfile")
    out = run(["nmstatectl", "gc", path], reason="convert nmstate to keyfiles").stdout
    try:
        doc = yaml.safe_load(out)
        pairs = doc["NetworkManager"]
        return [(str(name), str(text).encode()) for name, text in pairs]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise InputRefused(f"parsing nmstate output for {path}") from e


def _unit(kind: str, name: str, script: str, tool: str) -> str:
    if kind == "pre":
        desc, after, before, req = (
            "Pre-Install",
            "nestos-installer-pre.target",
            "nestos-installer.service",
            "nestos-installer.service",
        )
    else:
        desc, after, before, req = (
            "Post-Install",
            "nestos-installer.service",
            "nestos-installer.target",
            "nestos-installer.target",
        )
    return (
        f"# Generated by nestos-installer {tool} customize\n\n"
        f"[Unit]\nDescription={desc} Script ({name})\nDocumentation={DOC_URL}\n"
        f"After={after}\nBefore={before}\n\n"
        f"[Service]\nType=oneshot\nExecStart={script}\nRemainAfterExit=yes\n"
        f"StandardOutput=kmsg+console\nStandardError=kmsg+console\n\n"
        f"[Install]\nRequiredBy={req}\n"
    )


class _LiveConfig:
    def __init__(self) -> None:
        self.files: List[Dict[str, Any]] = []
        self.units: List[Dict[str, Any]] = []
        self.cas: List[Dict[str, Any]] = []
        self.merge: List[Dict[str, Any]] = []

    def add_file(self, path: str, data: bytes, mode: int) -> None:
        if any(f["path"] == path for f in self.files):
            raise InputRefused(f"config already specifies path {path}")
        self.files.append({"path": path, "contents": resource(data), "mode": mode})

    def add_unit(self, name: str, contents: str) -> None:
        if any(u["name"] == name for u in self.units):
            raise InputRefused(f"config already specifies unit {name}")
        self.units.append({"name": name, "contents": contents, "enabled": True})

    def empty(self) -> bool:
        return not (self.files or self.units or self.cas or self.merge)

    def to_json(self) -> bytes:
        ign: Dict[str, Any] = {"version": GENERATED_VERSION}
        if self.merge:
            ign["config"] = {"merge": self.merge}
        if self.cas:
            ign["security"] = {"tls": {"certificateAuthorities": self.cas}}
        cfg: Dict[str, Any] = {"ignition": ign}
        if self.files:
            cfg["storage"] = {"files": self.files}
        if self.units:
            cfg["systemd"] = {"units": self.units}
        return compact(cfg)


def compact(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def build(opts: CustomizeOptions, features: Features, tool: str) -> Result:
    """Turn the options into the initrd members to embed (spec §6.2 order)."""
    initrd = Initrd()
    live = _LiveConfig()
    msgs: List[str] = []
    dest_configs = [parse_ignition(p) for p in opts.dest_ignition]
    inst = _dest_options(opts, features, msgs)
    keyfiles = _network_keyfiles(opts, features)
    for name, data in keyfiles:
        if initrd.get(NETWORK_DIR + name) is not None:
            raise InputRefused(f"config already specifies keyfile {name}")
        initrd.add(NETWORK_DIR + name, data)
    cas = [check_ca_bundle(p) for p in opts.ignition_ca]
    live.cas.extend(resource(c) for c in cas)
    _add_scripts(opts, live, tool)
    user_inst = _add_installer_configs(opts, features, live)
    for p in opts.live_ignition:
        live.merge.append(resource(read_ignition(p)[0]))
    # finalisation
    if dest_configs:
        live.add_file(DEST_IGN, _dest_config(dest_configs, cas), 0o600)
        inst = {"ignition-file": DEST_IGN, **inst}
    installer = _add_installer_yaml(inst, user_inst, bool(keyfiles), cas, features, live, msgs)
    if not live.empty():
        initrd.add(CONFIG_IGN, live.to_json())
    return Result(initrd, msgs, installer)


def _dest_options(opts: CustomizeOptions, features: Features, msgs: List[str]) -> Dict[str, Any]:
    """The installer settings the --dest-* options give (the config file's keys)."""
    inst = opts.dest_settings()
    if opts.dest_console and not features.console:
        raise InputRefused(NO_CONSOLE)
    if any(a.startswith("console=") for a in opts.dest_karg_append):
        msgs.append("Note: consider using --dest-console instead of --dest-karg-append console=...")
    return inst


def _network_keyfiles(opts: CustomizeOptions, features: Features) -> List[Tuple[str, bytes]]:
    keyfiles: List[Tuple[str, bytes]] = []
    for k in opts.network_keyfile:
        if not features.live_initrd_network:
            raise InputRefused(NO_NET)
        keyfiles.append((keyfile_name(k), read_keyfile(k)))
    for n in opts.network_nmstate:
        if not features.live_initrd_network:
            raise InputRefused(NO_NET)
        keyfiles.extend(nmstate_keyfiles(n))
    return keyfiles


def _add_scripts(opts: CustomizeOptions, live: _LiveConfig, tool: str) -> None:
    for kind, scripts in (("pre", opts.pre_install), ("post", opts.post_install)):
        for s in scripts:
            name = untrusted.require_utf8(os.path.basename(s), f"{kind}-install script name")
            path = f"/usr/local/bin/{kind}-install-{name}"
            what = f"{kind}-install script"
            data = untrusted.read_file(s, what, limit=untrusted.SMALL_FILE_MAX, error=NestosError)
            live.add_file(path, data, 0o700)
            live.add_unit(f"{kind}-install-{name}.service", _unit(kind, name, path, tool))


Layer = Tuple[str, Dict[str, config.Value]]


def _add_installer_configs(
    opts: CustomizeOptions, features: Features, live: _LiveConfig
) -> List[Layer]:
    """The user's installer config files, numbered in order; returns (file, values) of each."""
    user_inst: List[Layer] = []
    for counter, p in enumerate(opts.installer_config):
        raw, values = parse_installer_config(p)
        if not features.installer_config:
            raise InputRefused(NO_INSTALLER)
        name = untrusted.require_utf8(os.path.basename(p), "installer config file name")
        live.add_file(f"{INSTALLER_D}/{counter:04d}-{name}", raw, 0o600)
        user_inst.append((f"installer config {p}", values))
    return user_inst


def _dest_config(configs: List[Dict[str, Any]], cas: List[bytes]) -> bytes:
    """The destination Ignition config: the one given, or a merge of them plus the CAs."""
    if len(configs) == 1 and not cas:
        return compact(configs[0])
    merged: Dict[str, Any] = {
        "version": GENERATED_VERSION,
        "config": {"merge": [resource(compact(c)) for c in configs]},
    }
    if cas:
        merged["security"] = {"tls": {"certificateAuthorities": [resource(c) for c in cas]}}
    return compact({"ignition": merged})


def _add_installer_yaml(
    inst: Dict[str, Any],
    user_inst: List[Layer],
    has_keyfiles: bool,
    cas: List[bytes],
    features: Features,
    live: _LiveConfig,
    msgs: List[str],
) -> Dict[str, config.Value]:
    """Our installer config file, after the user's ones, and the notice of what boot does.
    Returns the config the installer will run with, merged as `install` will merge it."""
    if not (inst or user_inst):
        return {}
    if has_keyfiles:
        inst["copy-network"] = True
    if cas:  # the installer's own fetches (Ignition and image URLs) trust them too
        inst["ignition-ca"] = [_add_ca(n, data, live) for n, data in enumerate(cas)]
    merged = config.merge([*user_inst, ("the customize options", inst)])
    dev = merged.get("dest-device")
    msgs.append(
        f"Boot media will automatically install to {dev} without confirmation."
        if dev
        else "Boot media will automatically run installer."
    )
    if inst:
        if not features.installer_config:
            raise InputRefused(NO_INSTALLER)
        text = config.to_yaml(inst).encode()
        live.add_file(f"{INSTALLER_D}/{len(user_inst):04d}-customize.yaml", text, 0o600)
    return merged


def _add_ca(n: int, data: bytes, live: _LiveConfig) -> str:
    path = f"{CA_DIR}/{n:04d}.pem"
    live.add_file(path, data, 0o644)
    return path


def _require_dest_device(opts: CustomizeOptions, res: Result, kargs: Callable[[], str]) -> None:
    """--dest-ignition alone stops the live installer at boot ("no install device"): refuse
    unless the installer config or the live kernel arguments name the device."""
    if not opts.dest_ignition or res.installer.get("dest-device"):
        return
    if not Cmdline.parse(kargs()).value("nestos.inst.install_dev"):
        raise UsageError(NO_DEVICE, hint=NO_DEVICE_HINT)


def customize_iso(
    path: str,
    opts: CustomizeOptions,
    force: bool,
    output: Optional[str],
    stdout: Optional[BinaryIO] = None,
) -> Result:
    with open(path, "rb") as fp:
        iso = LiveIso(fp)
        try:
            if not force and iso.is_customized():
                raise InputRefused(ALREADY)
            if opts.live_kargs and iso.kargs is None:
                raise InputRefused(NO_LIVE_KARGS)
            res = build(opts, iso.features, "iso")
            new: Optional[str] = None
            if opts.live_kargs and iso.kargs is not None:
                new = edit_kargs(
                    iso.kargs.default,
                    opts.live_karg_append,
                    opts.live_karg_delete,
                    opts.live_karg_replace,
                )
            _require_dest_device(opts, res, lambda: _kargs_after(iso, new))
            writes = iso.initrd_writes(res.initrd)
            if new is not None:
                writes += iso.kargs_writes(new)
        finally:
            iso.iso.close()
    outputs.apply(path, writes, output, stdout)
    return res


def _kargs_after(iso: LiveIso, new: Optional[str]) -> str:
    """The live kernel arguments the customized ISO boots with."""
    if new is not None:
        return new
    return iso.current_kargs() if iso.kargs is not None else ""


def customize_pxe(
    path: str, opts: CustomizeOptions, output: str, stdout: Optional[BinaryIO] = None
) -> Result:
    original = untrusted.read_file(
        path, "live initramfs", limit=INITRD_MAX, error=NestosError, regular_only=True
    )
    try:
        current = Initrd.from_bytes(original)
    except NestosError as e:
        raise ImageFormatError("not a NestOS live initramfs image") from e
    if not any(current.get(s) is not None for s in LIVE_STAMPS):
        raise ImageFormatError("not a NestOS live initramfs image")
    if current.get(CONFIG_IGN) is not None or network_files(current):
        raise InputRefused("input is already customized")
    feat_raw = next((current.get(p) for p in PXE_FEATURES if current.get(p) is not None), None)
    res = build(opts, Features.from_json(feat_raw), "pxe")
    if opts.dest_ignition and not res.installer.get("dest-device"):
        res.messages.append(PXE_NO_DEVICE_MSG)
    if res.initrd.get(CONFIG_IGN) is not None:
        res.messages.append(PXE_KARGS_MSG)
    extra = b"" if res.initrd.is_empty() else res.initrd.to_xz()
    outputs.write_bytes_output(original + extra, output, stdout)
    return res
