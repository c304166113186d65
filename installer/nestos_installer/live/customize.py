"""`iso customize` / `pxe customize`: generate live/dest Ignition configs and installer files.

Imports `live.*`, `kargs`, `cabundle`, `run`, `errors` and PyYAML; never prints (messages are
returned). Generated configs are Ignition spec 3.3.0 with gzip+base64 data-URL resources.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Tuple

import yaml

from nestos_installer.cabundle import check_ca_bundle
from nestos_installer.errors import ConfigError, ImageFormatError, NestosError, UsageError
from nestos_installer.kargs import edit_kargs
from nestos_installer.live import outputs
from nestos_installer.live.embed import CONFIG_IGN, NETWORK_DIR, Features, LiveIso, network_files
from nestos_installer.live.initrd import Initrd
from nestos_installer.run import have_tool, run

IGN_VERSION_RE = re.compile(r"^3\.[0-5]\.0$")
GENERATED_VERSION = "3.3.0"
DEST_IGN = "/etc/nestos/dest.ign"
INSTALLER_D = "/etc/nestos/installer.d"
DOC_URL = "https://docs.openeuler.org/en/docs/24.03_LTS/server/cloud/nestos/nestos/overview.html"
INSTALLER_KEYS = (
    "stream",
    "image-url",
    "image-file",
    "ignition-file",
    "ignition-url",
    "ignition-hash",
    "architecture",
    "platform",
    "console",
    "append-karg",
    "delete-karg",
    "copy-network",
    "network-dir",
    "save-partlabel",
    "save-partindex",
    "offline",
    "insecure",
    "insecure-ignition",
    "stream-base-url",
    "preserve-on-error",
    "fetch-retries",
    "secure-ipl",
    "dest-device",
)
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

    @property
    def live_kargs(self) -> bool:
        return bool(self.live_karg_append or self.live_karg_delete or self.live_karg_replace)


@dataclass
class Result:
    initrd: Initrd
    messages: List[str] = field(default_factory=list)


def resource(data: bytes) -> Dict[str, Any]:
    """An Ignition resource carrying `data` inline, gzip-compressed and base64-encoded."""
    gz = gzip.compress(data, compresslevel=9, mtime=0)
    return {"compression": "gzip", "source": "data:;base64," + base64.b64encode(gz).decode()}


def parse_ignition(path: str) -> Dict[str, Any]:
    """Read a user Ignition config; only spec 3.0.0-3.5.0 JSON objects are accepted."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
        if not isinstance(obj, dict):
            raise ConfigError("config is not a JSON object")
        ign = obj.get("ignition")
        version = ign.get("version") if isinstance(ign, dict) else None
        if not isinstance(version, str) or not IGN_VERSION_RE.match(version):
            raise ConfigError("unsupported config version")
    except (OSError, ValueError, ConfigError) as e:
        raise ConfigError(f"parsing Ignition config {path}") from e
    return obj


def parse_installer_config(path: str) -> Tuple[bytes, Dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        obj = yaml.safe_load(raw)
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ConfigError("config is not a YAML mapping")
        for k in obj:
            if k not in INSTALLER_KEYS:
                raise ConfigError(f"unknown field `{k}`")
    except (OSError, yaml.YAMLError, ConfigError) as e:
        raise ConfigError(f"parsing installer config {path}") from e
    return raw, obj


def nmstate_keyfiles(path: str) -> List[Tuple[str, bytes]]:
    """NetworkManager keyfiles generated from an nmstate document by `nmstatectl gc`."""
    if not have_tool("nmstatectl"):
        raise UsageError("nmstate is not available; use --network-keyfile")
    out = run(["nmstatectl", "gc", path], reason="convert nmstate to keyfiles").stdout
    try:
        doc = yaml.safe_load(out)
        pairs = doc["NetworkManager"]
        return [(str(name), str(text).encode()) for name, text in pairs]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"parsing nmstate output for {path}") from e


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
            raise UsageError(f"config already specifies path {path}")
        self.files.append({"path": path, "contents": resource(data), "mode": mode})

    def add_unit(self, name: str, contents: str) -> None:
        if any(u["name"] == name for u in self.units):
            raise UsageError(f"config already specifies unit {name}")
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
    dest_configs = [(p, parse_ignition(p)) for p in opts.dest_ignition]
    inst = _dest_options(opts, features, msgs)
    keyfiles = _network_keyfiles(opts, features)
    for name, data in keyfiles:
        if initrd.get(NETWORK_DIR + name) is not None:
            raise UsageError(f"config already specifies keyfile {name}")
        initrd.add(NETWORK_DIR + name, data)
    cas = [check_ca_bundle(p) for p in opts.ignition_ca]
    live.cas.extend(resource(c) for c in cas)
    _add_scripts(opts, live, tool)
    user_inst = _add_installer_configs(opts, features, live)
    for p in opts.live_ignition:
        parse_ignition(p)
        with open(p, "rb") as f:
            live.merge.append(resource(f.read()))
    # finalisation
    if dest_configs:
        live.add_file(DEST_IGN, _dest_config([c for _, c in dest_configs], cas), 0o600)
        inst = {"ignition-file": DEST_IGN, **inst}
    _add_installer_yaml(inst, user_inst, bool(keyfiles), features, live, msgs)
    if not live.empty():
        initrd.add(CONFIG_IGN, live.to_json())
    return Result(initrd, msgs)


def _dest_options(opts: CustomizeOptions, features: Features, msgs: List[str]) -> Dict[str, Any]:
    """The installer settings the --dest-* options give (the config file's keys)."""
    inst: Dict[str, Any] = {}
    if opts.dest_device:
        inst["dest-device"] = opts.dest_device
    if opts.dest_console:
        if not features.console:
            raise UsageError(NO_CONSOLE)
        inst["console"] = list(opts.dest_console)
    if opts.dest_karg_append:
        inst["append-karg"] = list(opts.dest_karg_append)
        if any(a.startswith("console=") for a in opts.dest_karg_append):
            msgs.append(
                "Note: consider using --dest-console instead of --dest-karg-append console=..."
            )
    if opts.dest_karg_delete:
        inst["delete-karg"] = list(opts.dest_karg_delete)
    return inst


def _network_keyfiles(opts: CustomizeOptions, features: Features) -> List[Tuple[str, bytes]]:
    keyfiles: List[Tuple[str, bytes]] = []
    for k in opts.network_keyfile:
        if not features.live_initrd_network:
            raise UsageError(NO_NET)
        with open(k, "rb") as f:
            keyfiles.append((os.path.basename(k), f.read()))
    for n in opts.network_nmstate:
        if not features.live_initrd_network:
            raise UsageError(NO_NET)
        keyfiles.extend(nmstate_keyfiles(n))
    return keyfiles


def _add_scripts(opts: CustomizeOptions, live: _LiveConfig, tool: str) -> None:
    for kind, scripts in (("pre", opts.pre_install), ("post", opts.post_install)):
        for s in scripts:
            name = os.path.basename(s)
            path = f"/usr/local/bin/{kind}-install-{name}"
            with open(s, "rb") as f:
                live.add_file(path, f.read(), 0o700)
            live.add_unit(f"{kind}-install-{name}.service", _unit(kind, name, path, tool))


def _add_installer_configs(
    opts: CustomizeOptions, features: Features, live: _LiveConfig
) -> List[Dict[str, Any]]:
    """The user's installer config files, numbered in order; returns their contents."""
    user_inst: List[Dict[str, Any]] = []
    for counter, p in enumerate(opts.installer_config):
        raw, obj = parse_installer_config(p)
        if not features.installer_config:
            raise UsageError(NO_INSTALLER)
        live.add_file(f"{INSTALLER_D}/{counter:04d}-{os.path.basename(p)}", raw, 0o600)
        user_inst.append(obj)
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
    user_inst: List[Dict[str, Any]],
    has_keyfiles: bool,
    features: Features,
    live: _LiveConfig,
    msgs: List[str],
) -> None:
    """Our installer config file, after the user's ones, and the notice of what boot does."""
    if inst or user_inst:
        dev = inst.get("dest-device") or next(
            (u["dest-device"] for u in reversed(user_inst) if u.get("dest-device")), None
        )
        msgs.append(
            f"Boot media will automatically install to {dev} without confirmation."
            if dev
            else "Boot media will automatically run installer."
        )
        if has_keyfiles:
            inst["copy-network"] = True
    if inst:
        if not features.installer_config:
            raise UsageError(NO_INSTALLER)
        order = {k: i for i, k in enumerate(INSTALLER_KEYS)}
        ordered = dict(sorted(inst.items(), key=lambda kv: order[kv[0]]))
        text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False).encode()
        live.add_file(f"{INSTALLER_D}/{len(user_inst):04d}-customize.yaml", text, 0o600)


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
                raise UsageError(ALREADY)
            if opts.live_kargs and iso.kargs is None:
                raise UsageError(NO_LIVE_KARGS)
            res = build(opts, iso.features, "iso")
            writes = iso.initrd_writes(res.initrd)
            if opts.live_kargs and iso.kargs is not None:
                new = edit_kargs(
                    iso.kargs.default,
                    opts.live_karg_append,
                    opts.live_karg_delete,
                    opts.live_karg_replace,
                )
                writes += iso.kargs_writes(new)
        finally:
            iso.iso.close()
    outputs.apply(path, writes, output, stdout)
    return res


def customize_pxe(
    path: str, opts: CustomizeOptions, output: str, stdout: Optional[BinaryIO] = None
) -> Result:
    with open(path, "rb") as f:
        original = f.read()
    try:
        current = Initrd.from_bytes(original)
    except NestosError as e:
        raise ImageFormatError("not a NestOS live initramfs image") from e
    if not any(current.get(s) is not None for s in LIVE_STAMPS):
        raise ImageFormatError("not a NestOS live initramfs image")
    if current.get(CONFIG_IGN) is not None or network_files(current):
        raise UsageError("input is already customized")
    feat_raw = next((current.get(p) for p in PXE_FEATURES if current.get(p) is not None), None)
    res = build(opts, Features.from_json(feat_raw), "pxe")
    if res.initrd.get(CONFIG_IGN) is not None:
        res.messages.append(PXE_KARGS_MSG)
    extra = b"" if res.initrd.is_empty() else res.initrd.to_xz()
    outputs.write_bytes_output(original + extra, output, stdout)
    return res
