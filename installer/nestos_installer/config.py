"""Installer config files (`--config-file`, /etc/nestos/installer.d/*.yaml): YAML mappings
whose keys are the long option names of `install`.

Files apply in order, then the command line: scalars last-wins, lists concatenate, a
destination device given twice is an error. Imports `errors` only (and PyYAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from nestos_installer.errors import ConfigError, UsageError

LIST_KEYS = (
    "console",
    "append-karg",
    "delete-karg",
    "save-partlabel",
    "save-partindex",
    "keyring",
    "ignition-ca",
)
FLAG_KEYS = ("copy-network", "offline", "insecure", "insecure-ignition", "preserve-on-error")
SCALAR_KEYS = (
    "dest-device",
    "stream",
    "image-url",
    "image-file",
    "ignition-file",
    "ignition-url",
    "ignition-hash",
    "architecture",
    "platform",
    "network-dir",
    "stream-base-url",
    "fetch-retries",
    "firstboot-args",
    "progress",
)
ALL_KEYS = (*SCALAR_KEYS, *LIST_KEYS, *FLAG_KEYS)
INSTALLER_D = Path("/etc/nestos/installer.d")

Value = Union[str, bool, List[str]]


def _scalar(key: str, value: Any, src: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"parsing config file {src}: '{key}' must be a string")
    return str(value)


def parse_file(path: Path) -> Dict[str, Value]:
    """One config file -> {key: value}, with types checked (unknown key -> error)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"opening config file {path}") from e
    import yaml  # only config files need it: not paid at every start-up

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"parsing config file {path}: invalid YAML") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"parsing config file {path}: expected a mapping of options")
    out: Dict[str, Value] = {}
    for key, value in data.items():
        if key not in ALL_KEYS:
            raise ConfigError(
                f"parsing config file {path}: unknown key '{key}'",
                hint="keys are install's long option names, e.g. append-karg",
            )
        if key in LIST_KEYS:
            items = value if isinstance(value, list) else [value]
            out[key] = [_scalar(key, v, str(path)) for v in items]
        elif key in FLAG_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"parsing config file {path}: '{key}' must be true or false")
            out[key] = value
        else:
            out[key] = _scalar(key, value, str(path))
    return out


def merge(layers: Sequence[Tuple[str, Dict[str, Value]]]) -> Dict[str, Value]:
    """Merge layers in order (files first, command line last)."""
    merged: Dict[str, Value] = {}
    device_from = None
    for src, layer in layers:
        for key, value in layer.items():
            if key == "dest-device":
                if device_from is not None:
                    raise UsageError(
                        f"destination device given twice (in {device_from} and in {src})"
                    )
                device_from = src
            if key in LIST_KEYS:
                prev = merged.get(key, [])
                assert isinstance(prev, list) and isinstance(value, list)
                merged[key] = [*prev, *value]
            elif key in FLAG_KEYS:
                merged[key] = bool(merged.get(key, False)) or bool(value)
            else:
                merged[key] = value
    return merged


def installer_d_files(directory: Path = INSTALLER_D) -> List[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def to_yaml(values: Dict[str, Value]) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
