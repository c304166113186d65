"""The host identity x2nestos can carry: login users' SSH keys, SSH host keys, hostname.

Readers take `root`; sshd_config is read with sshd's first-value-wins rule. stdlib only.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from x2nestos.hostfacts import ROOT, HostFileError, read_host_bytes, read_host_text

KEY_TYPE = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+@openssh\.com)$")
NO_LOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")
# Members of these groups on the old host are its administrators...
ADMIN_GROUPS = ("sudo", "wheel", "admin")
# ...and get the group NestOS grants sudo to (as Fedora CoreOS does).
NESTOS_SUDO_GROUP = "wheel"
DECIMAL = re.compile(r"[0-9]{1,10}")  # str.isdigit() takes "²", which int() refuses
MAX_SSHD_FILES = 64


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: str
    keys: Tuple[str, ...]
    admin: bool


@dataclass
class Identity:
    users: List[User] = field(default_factory=list)
    host_keys: Dict[str, Tuple[bytes, int]] = field(default_factory=dict)  # path -> (data, mode)
    hostname: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # stripped options etc.
    not_carried: List[str] = field(default_factory=list)


def _read(root: Path, rel: str) -> Optional[str]:
    """A host file's text, or None when it is missing or cannot be read (FIFO, directory...)."""
    if ".." in rel.split("/"):
        return None  # a path from a host file that would leave the tree we read
    try:
        return read_host_text(root, rel)
    except HostFileError:
        return None


def sshd_settings(root: Path = ROOT, includes: Optional[List[str]] = None) -> Dict[str, List[str]]:
    """Global sshd_config keywords (lower-case) -> arguments, first value wins like sshd.
    `includes` collects the Include patterns met (absolute), for a probe to fetch."""
    out: Dict[str, List[str]] = {}
    matched: List[str] = []

    budget = [MAX_SSHD_FILES]  # Include loops and fan-outs end here

    def parse(rel: str, depth: int) -> None:
        budget[0] -= 1
        text = _read(root, rel) if budget[0] >= 0 and depth <= 8 else None
        if text is None:
            return
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = re.split(r"\s+|=", line, maxsplit=1)
            key = parts[0].lower()
            args = parts[1].split() if len(parts) > 1 else []
            if key == "match":
                matched.append(rel)
                return  # Match blocks apply to some connections only; the globals end here
            if key == "include":
                for pattern in args:
                    full = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                    if ".." in full.split("/"):
                        continue  # would leave the tree we read
                    if includes is not None:
                        includes.append(full)
                    for p in sorted(glob.glob(glob.escape(str(root).rstrip("/")) + full)):
                        parse("/" + str(Path(p).relative_to(root)), depth + 1)
                continue
            out.setdefault(key, args)

    parse("etc/ssh/sshd_config", 0)
    if matched:
        out["#match"] = matched
    return out


def login_users(root: Path = ROOT) -> List[Tuple[str, int, str, List[str]]]:
    """(name, uid, home, groups) of root and regular users that have a login shell."""
    uid_min = 1000
    for line in (_read(root, "etc/login.defs") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "UID_MIN" and DECIMAL.fullmatch(parts[1]):
            uid_min = int(parts[1])
    groups: Dict[str, List[str]] = {}
    for line in (_read(root, "etc/group") or "").splitlines():
        f = line.split(":")
        if len(f) >= 4:
            for member in filter(None, f[3].split(",")):
                groups.setdefault(member, []).append(f[0])
    out = []
    for line in (_read(root, "etc/passwd") or "").splitlines():
        f = line.split(":")
        if len(f) < 7 or not DECIMAL.fullmatch(f[2]):
            continue
        uid = int(f[2])
        if (uid != 0 and not uid_min <= uid < 60000) or f[6].rsplit("/", 1)[-1] in NO_LOGIN_SHELLS:
            continue
        out.append((f[0], uid, f[5], groups.get(f[0], [])))
    return out


def parse_authorized_keys(text: str) -> Tuple[List[str], int]:
    """Keys without their options (a forced command could lock us out): (keys, stripped)."""
    keys, stripped = [], 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = _split_options(line)
        for i, tok in enumerate(tokens):
            if KEY_TYPE.match(tok) and i + 1 < len(tokens):
                keys.append(" ".join(tokens[i:]))
                stripped += 1 if i else 0
                break
    return keys, stripped


def _split_options(line: str) -> List[str]:
    """Split on whitespace outside double quotes (options may hold quoted spaces)."""
    tokens, cur, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if cur:
                tokens.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        tokens.append(cur)
    return tokens


def _expand(pattern: str, name: str, uid: int, home: str) -> str:
    table = {"%": "%", "h": home, "U": str(uid), "u": name}
    out = re.sub(r"%([%hUu])", lambda m: table[m.group(1)], pattern)
    return out if out.startswith("/") else f"{home.rstrip('/')}/{out}"


def key_files(settings: Dict[str, List[str]], name: str, uid: int, home: str) -> List[str]:
    """The AuthorizedKeysFile paths sshd reads for one user."""
    files = settings.get("authorizedkeysfile", [".ssh/authorized_keys", ".ssh/authorized_keys2"])
    return [_expand(p, name, uid, home) for p in files if p.lower() != "none"]


def host_key_files(settings: Dict[str, List[str]]) -> List[str]:
    """The private host key files sshd serves (HostKey, else the default ones)."""
    paths = settings.get("hostkey") or [
        f"/etc/ssh/ssh_host_{t}_key" for t in ("rsa", "ecdsa", "ed25519")
    ]
    return [p for p in paths if ".." not in p.split("/")]


def probe_paths(root: Path) -> List[str]:
    """Files the identity readers would read beyond a probe's first pass (sshd Include
    patterns, HostKey files, each login user's authorized keys): for the next pass."""
    includes: List[str] = []
    settings = sshd_settings(root, includes)
    out = includes + [p + s for p in host_key_files(settings) for s in ("", ".pub")]
    for name, uid, home, _groups in login_users(root):
        out += key_files(settings, name, uid, home)
    return out


def read_users(root: Path, ident: Identity) -> None:
    settings = sshd_settings(root)
    if settings.get("authorizedkeyscommand", ["none"])[0].lower() != "none":
        ident.not_carried.append("ssh-keys: keys served by AuthorizedKeysCommand")
    if "#match" in settings:
        ident.notes.append(
            "ssh-keys: sshd_config Match blocks were not evaluated; global "
            "AuthorizedKeysFile used for every user"
        )
    for name, uid, home, groups in login_users(root):
        keys: List[str] = []
        for path in key_files(settings, name, uid, home):
            text = _read(root, path)
            if text is None:
                continue
            found, stripped = parse_authorized_keys(text)
            keys += [k for k in found if k not in keys]
            if stripped:
                ident.notes.append(f"ssh-keys: removed options from {stripped} key(s) of {name}")
        if keys:
            admin = any(g in ADMIN_GROUPS for g in groups)
            ident.users.append(User(name, uid, home, tuple(keys), admin))


def read_host_keys(root: Path, ident: Identity) -> None:
    for p in host_key_files(sshd_settings(root)):
        for suffix, mode in (("", 0o600), (".pub", 0o644)):
            try:
                data = read_host_bytes(root, (p + suffix).lstrip("/"))
            except HostFileError:
                continue
            ident.host_keys["/etc/ssh/" + Path(p + suffix).name] = (data, mode)


def read_hostname(root: Path = ROOT) -> Optional[str]:
    for rel in ("etc/hostname", "proc/sys/kernel/hostname"):
        text = (_read(root, rel) or "").split("#", 1)[0].strip()
        if text and text != "localhost" and re.match(r"^[A-Za-z0-9.-]{1,253}$", text):
            return text.splitlines()[0]
    return None


def read_identity(root: Path = ROOT, *, users: bool, host_keys: bool, hostname: bool) -> Identity:
    ident = Identity()
    if users:
        read_users(root, ident)
    if host_keys:
        read_host_keys(root, ident)
    if hostname:
        ident.hostname = read_hostname(root)
    return ident
