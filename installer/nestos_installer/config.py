"""Installer config: the one schema of `install`'s options as YAML keys and the one parser of
install -c, installer.d and iso|pxe customize --installer-config (files in order, then the command
line). Imports `errors`, `untrusted`, `kargs` and, lazily, the value parsers and PyYAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from nestos_installer import untrusted
from nestos_installer.errors import ConfigError, NestosError, UsageError
from nestos_installer.kargs import check_arg

SCHEMA: Tuple[Tuple[str, str], ...] = (
    ("stream", "scalar"),
    ("image-url", "scalar"),
    ("image-file", "scalar"),
    ("ignition-file", "scalar"),
    ("ignition-url", "scalar"),
    ("ignition-hash", "scalar"),
    ("ignition-ca", "list"),
    ("architecture", "scalar"),
    ("platform", "scalar"),
    ("console", "list"),
    ("firstboot-args", "scalar"),
    ("append-karg", "list"),
    ("delete-karg", "list"),
    ("copy-network", "flag"),
    ("network-dir", "scalar"),
    ("save-partlabel", "list"),
    ("save-partindex", "list"),
    ("offline", "flag"),
    ("insecure", "flag"),
    ("insecure-ignition", "flag"),
    ("stream-base-url", "scalar"),
    ("keyring", "list"),
    ("preserve-on-error", "flag"),
    ("fetch-retries", "scalar"),
    ("progress", "scalar"),
    ("dest-device", "scalar"),
)
"""Every key (a long option of `install` but --config-file and --plan; a test holds them equal)
and its kind: a string, a list of strings (a single string is taken as a list of one) or a
boolean. In the order of the files we write: coreos-installer's field order (byte-identical
customized images), NestOS' own keys beside their relatives."""
FILE_ORDER = tuple(key for key, _ in SCHEMA)
SCALAR_KEYS = tuple(key for key, kind in SCHEMA if kind == "scalar")
LIST_KEYS = tuple(key for key, kind in SCHEMA if kind == "list")
FLAG_KEYS = tuple(key for key, kind in SCHEMA if kind == "flag")
ALL_KEYS = FILE_ORDER
INSTALLER_D = Path("/etc/nestos/installer.d")

Value = Union[str, bool, List[str]]


def _console(value: str) -> None:
    from nestos_installer.bootconfig import Console

    Console.parse(value)


def _karg(value: str) -> None:
    check_arg(value)


def _url(value: str) -> None:
    from nestos_installer.fetch import check_url

    check_url(value)


def _fetch_retries(value: str) -> None:
    from nestos_installer.fetch import FetchRetries

    FetchRetries.parse(value)


def _partindex(value: str) -> None:
    from nestos_installer.gpt import PartitionFilter

    PartitionFilter.parse((), (value,))


def _partlabel(value: str) -> None:
    from nestos_installer.gpt import PartitionFilter

    PartitionFilter.parse((value,), ())


def _progress(value: str) -> None:
    from nestos_installer.pipeline.progress import ProgressMode

    choices = [m.value for m in ProgressMode]
    if value not in choices:
        raise UsageError(f"invalid progress mode '{value}'", hint=f"one of {', '.join(choices)}")


_CHECKS: Dict[str, Callable[[str], None]] = {
    "console": _console,
    "append-karg": _karg,
    "delete-karg": _karg,
    "firstboot-args": _karg,
    "image-url": _url,
    "ignition-url": _url,
    "stream-base-url": _url,
    "fetch-retries": _fetch_retries,
    "save-partindex": _partindex,
    "save-partlabel": _partlabel,
    "progress": _progress,
}


class _Source:
    """Where values come from, for messages: a file (`parsing config file F: ...`) or the command
    line (the value parser's own message, as `install` has always given)."""

    def __init__(self, path: Optional[Path], what: str = "config file") -> None:
        self.prefix = f"parsing {what} {path}" if path is not None else None

    def error(self, msg: str, hint: Optional[str] = None) -> NestosError:
        if self.prefix is None:
            return UsageError(msg, hint=hint)
        return ConfigError(f"{self.prefix}: {msg}", hint=hint)

    def check(self, key: str, value: str) -> None:
        untrusted.require_utf8(value, f"'{key}' value", self.error)
        check = _CHECKS.get(key)
        if check is None:
            return
        try:
            check(value)
        except UsageError as e:
            if self.prefix is None:
                raise
            raise ConfigError(f"{self.prefix}: invalid '{key}' value", hint=e.hint) from e


def _scalar(key: str, value: Any, src: _Source) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise src.error(f"'{key}' must be a string")
    text = str(value)
    src.check(key, text)
    return text


def check(
    values: Mapping[Any, Any], path: Optional[Path] = None, what: str = "config file"
) -> Dict[str, Value]:
    """Keys and value types of one layer (a file's mapping, or the command line's options) ->
    {key: value}: unknown keys, wrong types and bad values (consoles, kargs, URLs...) refused."""
    src = _Source(path, what)
    out: Dict[str, Value] = {}
    for key, value in values.items():
        if key not in ALL_KEYS:
            raise src.error(
                f"unknown key '{key}'",
                hint="keys are install's long option names, e.g. append-karg",
            )
        if key in LIST_KEYS:
            items = value if isinstance(value, (list, tuple)) else [value]
            out[key] = [_scalar(key, v, src) for v in items]
        elif key in FLAG_KEYS:
            if not isinstance(value, bool):
                raise src.error(f"'{key}' must be true or false")
            out[key] = value
        else:
            out[key] = _scalar(key, value, src)
    return out


def load_file(path: Path, what: str = "config file") -> Tuple[bytes, Dict[str, Value]]:
    """One config file -> (its bytes, {key: value}), read and parsed under bounds, checked."""
    raw = untrusted.read_file(path, what, limit=untrusted.CONFIG_MAX)
    data = untrusted.parse_yaml(raw, f"parsing {what} {path}")
    if data is None:
        return raw, {}
    if not isinstance(data, dict):
        raise ConfigError(f"parsing {what} {path}: expected a mapping of options")
    return raw, check(data, path, what)


def parse_file(path: Path) -> Dict[str, Value]:
    """One config file -> {key: value}, with types checked (unknown key -> error)."""
    return load_file(path)[1]


def merge(layers: Sequence[Tuple[str, Dict[str, Value]]]) -> Dict[str, Value]:
    """Merge layers in order (files first, command line last): scalars last-wins, lists
    concatenate, a destination device given twice is an error."""
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


def to_yaml(values: Mapping[str, Value]) -> str:
    """A config file of `values`, keys in FILE_ORDER."""
    import yaml

    order = {k: i for i, k in enumerate(FILE_ORDER)}
    ordered = dict(sorted(values.items(), key=lambda kv: order[kv[0]]))
    text: str = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)
    return text
