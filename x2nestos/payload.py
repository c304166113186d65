"""What the live environment receives: the destination Ignition (user config + carried identity),
the installer.d config, network keyfiles, the target re-check, and the live Ignition carrying them.

Pure functions from data to bytes (stdlib json/base64, gzip via nestos_installer.compression);
nothing here touches the host.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nestos_installer.compression import Compression
from nestos_installer.errors import ConfigError, UsageError
from x2nestos.identity import NESTOS_SUDO_GROUP, Identity
from x2nestos.initramfs import Member

SPEC = "3.3.0"
SUPPORTED_SPECS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")
CHECK_SCRIPT = "usr/local/bin/x2nestos-target-check"
CHECK_UNIT = "etc/systemd/system/x2nestos-target-check.service"


@dataclass(frozen=True)
class LivePaths:
    """Where the live image looks for our files: NestOS names, or coreos names in live images
    built before the rename (the karg/path prefix drift of old x2nestos)."""

    prefix: str = "nestos"

    @property
    def dest_ign(self) -> str:
        return f"etc/{self.prefix}/dest.ign"

    @property
    def installer_yaml(self) -> str:
        return f"etc/{self.prefix}/installer.d/0000-x2nestos.yaml"

    @property
    def network_dir(self) -> str:
        return f"etc/{self.prefix}-firstboot-network"

    @property
    def check_dropin(self) -> str:
        return f"etc/systemd/system/{self.prefix}-installer.service.d/10-x2nestos-target-check.conf"

    @property
    def installer_unit(self) -> str:
        return f"{self.prefix}-installer.service"

    @property
    def ssh_dropin(self) -> str:
        return f"etc/systemd/system/{self.installer_unit}.d/20-x2nestos-live-ssh.conf"


HASH_RE = re.compile(r"^(sha256-[0-9a-f]{64}|sha512-[0-9a-f]{128})$")


def data_url(data: bytes) -> Dict[str, Any]:
    """An Ignition resource holding `data` gzip-compressed (deterministic: mtime 0, and the same
    bytes on every Python: 3.7's gzip.compress has no `mtime`)."""
    packed = base64.b64encode(Compression.GZIP.compress(data)).decode()
    return {"compression": "gzip", "source": "data:;base64," + packed}


def _spec_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def parse_user_ignition(data: bytes, source: str) -> Dict[str, Any]:
    """The user's destination config: JSON with a supported 3.x `ignition.version`."""
    try:
        conf = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"parsing Ignition config {source}: not JSON") from e
    except RecursionError:
        raise ConfigError(f"parsing Ignition config {source}: nested too deeply") from None
    ign = conf.get("ignition") if isinstance(conf, dict) else None
    version = ign.get("version") if isinstance(ign, dict) else None
    if version not in SUPPORTED_SPECS:
        raise ConfigError(
            f"parsing Ignition config {source}: unsupported config version {version!r}",
            hint="use Ignition spec " + " to ".join((SUPPORTED_SPECS[0], SUPPORTED_SPECS[-1])),
        )
    return dict(conf)


def config_logins(conf: Dict[str, Any]) -> Tuple[List[str], bool]:
    """(users of a destination config who can log in: an SSH key or a password hash, whether it
    pulls in other configs that may add more)."""
    passwd = conf.get("passwd")
    users = passwd.get("users") if isinstance(passwd, dict) else None
    out = []
    for u in users if isinstance(users, list) else []:
        if not isinstance(u, dict) or not isinstance(u.get("name"), str):
            continue
        keys = u.get("sshAuthorizedKeys")
        has_key = isinstance(keys, list) and any(isinstance(k, str) and k.strip() for k in keys)
        pw = u.get("passwordHash")
        if has_key or (isinstance(pw, str) and pw.strip()):
            out.append(u["name"])
    cfg = conf.get("ignition", {}).get("config")
    pulls = isinstance(cfg, dict) and bool(cfg.get("merge") or cfg.get("replace"))
    return out, pulls


def check_ignition_hash(value: str) -> str:
    if not HASH_RE.match(value):
        raise UsageError(
            f"invalid --ignition-hash {value!r}", hint="expected sha256-<hex> or sha512-<hex>"
        )
    return value


@dataclass(frozen=True)
class DestSource:
    """Where the user's own destination config comes from (at most one of the two)."""

    config: Optional[Dict[str, Any]] = None
    url: Optional[str] = None
    url_hash: Optional[str] = None


def dest_ignition(user: DestSource, ident: Identity, keyfiles: Dict[str, str]) -> Dict[str, Any]:
    """A spec-3.3.0 config carrying the host identity that merges the user's config on top.

    Ignition merges child configs over the parent, so the user's own entries win over carried
    ones (same user name, same file path).
    """
    version = SPEC
    merge: List[Dict[str, Any]] = []
    if user.config is not None:
        v = str(user.config["ignition"]["version"])
        version = max(version, v, key=_spec_tuple)
        merge.append(data_url((json.dumps(user.config, separators=(",", ":")) + "\n").encode()))
    elif user.url:
        res: Dict[str, Any] = {"source": user.url}
        if user.url_hash:
            res["verification"] = {"hash": user.url_hash}
        merge.append(res)
    conf: Dict[str, Any] = {"ignition": {"version": version}}
    if merge:
        conf["ignition"]["config"] = {"merge": merge}
    users = []
    for u in ident.users:
        entry: Dict[str, Any] = {"name": u.name, "sshAuthorizedKeys": list(u.keys)}
        if u.admin and u.name != "root":
            entry["groups"] = [NESTOS_SUDO_GROUP]
        users.append(entry)
    if users:
        conf["passwd"] = {"users": users}
    files = []
    if ident.hostname:
        files.append(_file("/etc/hostname", (ident.hostname + "\n").encode(), 0o644))
    for path, (data, mode) in sorted(ident.host_keys.items()):
        files.append(_file(path, data, mode))
    for name, text in sorted(keyfiles.items()):
        files.append(_file(f"/etc/NetworkManager/system-connections/{name}", text.encode(), 0o600))
    if files:
        conf["storage"] = {"files": files}
    return conf


def _file(path: str, data: bytes, mode: int) -> Dict[str, Any]:
    return {"path": path, "mode": mode, "overwrite": True, "contents": data_url(data)}


def yaml_text(config: Dict[str, Any]) -> str:
    """Tiny YAML emitter for the installer config: scalars as JSON strings, lists in block style."""
    lines = []
    for key, value in config.items():
        if isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key}:")
            lines += [f"- {json.dumps(str(v))}" for v in value]
        else:
            lines.append(f"{key}: {json.dumps(str(value))}")
    return "\n".join(lines) + "\n"


def installer_config(
    dest_device: str,
    *,
    paths: LivePaths,
    consoles: Sequence[str],
    save_partlabel: Sequence[str],
    append_karg: Sequence[str],
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    conf: Dict[str, Any] = {"ignition-file": "/" + paths.dest_ign}
    if consoles:
        conf["console"] = list(consoles)
    if append_karg:
        conf["append-karg"] = list(append_karg)
    if save_partlabel:
        conf["save-partlabel"] = list(save_partlabel)
    conf.update(extra or {})
    conf["dest-device"] = dest_device
    return conf


def target_check_script(by_id_path: str, size: int, serial: Optional[str]) -> str:
    """Shell run before the installer in the live env: wrong disk -> reboot to the old OS."""
    want_serial = shlex.quote(serial or "")
    return f"""#!/bin/sh
# Generated by x2nestos: refuse to install unless the target is the disk that was checked.
dev={shlex.quote(by_id_path)}
want_size={size}
want_serial={want_serial}
fail() {{
    echo "x2nestos: target check failed: $*; NOT installing, rebooting into the old system" \\
        | tee /dev/kmsg >&2
    sync
    systemctl --no-block reboot || reboot -f
    exit 1
}}
i=0
while [ ! -b "$dev" ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
[ -b "$dev" ] || fail "$dev does not exist"
name=$(basename "$(readlink -f "$dev")")
size=$(( $(cat /sys/class/block/$name/size) * 512 ))
[ "$size" = "$want_size" ] || fail "$dev has $size bytes, expected $want_size"
if [ -n "$want_serial" ]; then
    serial=$(cat /sys/class/block/$name/serial /sys/class/block/$name/device/serial 2>/dev/null \\
        | head -n 1 | tr -d ' ')
    [ "$serial" = "$(echo "$want_serial" | tr -d ' ')" ] || fail "$dev serial is '$serial'"
fi
echo "x2nestos: target $dev ($name, $size bytes) confirmed" | tee /dev/kmsg
"""


CHECK_UNIT_TEXT = """# Generated by x2nestos
[Unit]
Description=x2nestos: confirm the target disk before installing
DefaultDependencies=no
After=systemd-udev-settle.service systemd-udev-trigger.service
Before={unit}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/x2nestos-target-check
StandardOutput=kmsg+console
StandardError=kmsg+console
"""

CHECK_DROPIN_TEXT = """# Generated by x2nestos
[Unit]
Requires=x2nestos-target-check.service
After=x2nestos-target-check.service
"""


LIVE_HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
LIVE_SSHD_CONF = "etc/ssh/sshd_config.d/10-x2nestos-live.conf"
LIVE_SSHD_TEXT = """# Generated by x2nestos: the controller follows the install over SSH, by key
HostKey /etc/{key}
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PasswordAuthentication no
""".format(key=LIVE_HOST_KEY.split("etc/", 1)[1])
# sshd is pulled in by the installer (an unattended live boot never reaches multi-user)
LIVE_SSH_DROPIN_TEXT = """# Generated by x2nestos
[Unit]
Wants=ssh.service sshd.service
"""


@dataclass(frozen=True)
class LiveSsh:
    """SSH into the live environment: root takes the controller's keys (never a password)
    and sshd serves a host key x2nestos made, so the controller knows it before the jump."""

    authorized_keys: Tuple[str, ...]
    host_key: bytes  # private, OpenSSH format: goes 0600 into the archive only
    host_key_pub: str

    def members(self, paths: LivePaths) -> List[Member]:
        keys = "".join(k + "\n" for k in self.authorized_keys).encode()
        return [
            Member("root/.ssh/authorized_keys", keys, 0o600),
            Member(LIVE_HOST_KEY, self.host_key, 0o600),
            Member(LIVE_HOST_KEY + ".pub", (self.host_key_pub + "\n").encode(), 0o644),
            Member(LIVE_SSHD_CONF, LIVE_SSHD_TEXT.encode(), 0o644),
            Member(paths.ssh_dropin, LIVE_SSH_DROPIN_TEXT.encode(), 0o644),
        ]

    def ignition(self, paths: LivePaths) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        """(storage files, passwd) of the live Ignition config carrying the same."""
        files = [
            {"path": "/" + m.path, "mode": m.mode, "overwrite": True, "contents": data_url(m.data)}
            for m in self.members(paths)
            if not m.path.startswith("root/")
        ]
        users = [{"name": "root", "sshAuthorizedKeys": list(self.authorized_keys)}]
        return files, {"users": users}

    def to_json(self) -> Dict[str, Any]:
        return {"authorized-keys": len(self.authorized_keys), "host-key": self.host_key_pub}


@dataclass(frozen=True)
class Payload:
    dest: Dict[str, Any]
    installer: Dict[str, Any]
    keyfiles: Dict[str, str]
    check_script: str
    paths: LivePaths = LivePaths()
    live_ssh: Optional[LiveSsh] = None

    @property
    def unit_text(self) -> str:
        return CHECK_UNIT_TEXT.format(unit=self.paths.installer_unit)

    def dest_bytes(self) -> bytes:
        return (json.dumps(self.dest, separators=(",", ":")) + "\n").encode()

    def live_ignition(self) -> Dict[str, Any]:
        """For a NestOS live image (Ignition in the live initrd): the same files, via Ignition.

        The archive also carries them as plain files, and Ignition refuses to replace an
        existing file unless told to: every entry says overwrite.
        """
        files = [
            {
                "path": "/" + CHECK_SCRIPT,
                "mode": 0o700,
                "contents": data_url(self.check_script.encode()),
            },
            {
                "path": "/" + self.paths.dest_ign,
                "mode": 0o600,
                "contents": data_url(self.dest_bytes()),
            },
            {
                "path": "/" + self.paths.installer_yaml,
                "mode": 0o600,
                "contents": data_url(yaml_text(self.installer).encode()),
            },
            {
                "path": "/" + self.paths.check_dropin,
                "mode": 0o644,
                "contents": data_url(CHECK_DROPIN_TEXT.encode()),
            },
        ]
        for f in files:
            f["overwrite"] = True
        units = [{"name": "x2nestos-target-check.service", "contents": self.unit_text}]
        conf: Dict[str, Any] = {"ignition": {"version": SPEC}}
        if self.live_ssh is not None:
            ssh_files, conf["passwd"] = self.live_ssh.ignition(self.paths)
            files += ssh_files
        conf.update({"storage": {"files": files}, "systemd": {"units": units}})
        return conf

    def members(self) -> List[Member]:
        """Files of the appended archive: direct copies for live environments without Ignition
        (the whole rootfs is the initramfs) and /config.ign for NestOS live images."""
        live = (json.dumps(self.live_ignition(), separators=(",", ":")) + "\n").encode()
        out = [
            Member("config.ign", live, 0o600),
            Member(self.paths.dest_ign, self.dest_bytes(), 0o600),
            Member(self.paths.installer_yaml, yaml_text(self.installer).encode(), 0o600),
            Member(CHECK_SCRIPT, self.check_script.encode(), 0o700),
            Member(CHECK_UNIT, self.unit_text.encode(), 0o644),
            Member(self.paths.check_dropin, CHECK_DROPIN_TEXT.encode(), 0o644),
        ]
        out += [
            Member(f"{self.paths.network_dir}/{n}", t.encode(), 0o600)
            for n, t in self.keyfiles.items()
        ]
        if self.live_ssh is not None:
            out += self.live_ssh.members(self.paths)
        return out


SECRET_KEY = re.compile(r"^(\s*[\w.-]*(psk|password|secret|private-key)[\w.-]*\s*=).*$", re.M)


def redacted_keyfile(text: str) -> str:
    """A keyfile safe to print: values of password/psk/secret keys replaced."""
    return SECRET_KEY.sub(r"\1<redacted>", text)


def redacted(conf: Dict[str, Any]) -> Dict[str, Any]:
    """A copy safe to print: data URL contents of secrets (host keys, user config) elided."""
    out = json.loads(json.dumps(conf))
    for f in out.get("storage", {}).get("files", []):
        if f.get("mode", 0) & 0o077 == 0 and "contents" in f:
            f["contents"] = {"source": "<redacted: mode 0{:o}, not shown>".format(f["mode"])}
    for m in out.get("ignition", {}).get("config", {}).get("merge", []):
        if str(m.get("source", "")).startswith("data:"):
            m["source"] = "<your Ignition config, merged last>"
            m.pop("compression", None)
    return dict(out)
