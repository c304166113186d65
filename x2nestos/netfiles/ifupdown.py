"""Debian's /etc/network/interfaces (+ `source` includes): inet/inet6 static and dhcp stanzas,
bonds (bond-*), bridges (bridge_ports) and VLANs (name.id / vlan-raw-device).

stdlib + hostfacts + netfiles only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from x2nestos.hostfacts import HostFileError, read_host_text
from x2nestos.netfiles import model
from x2nestos.netfiles.model import Interface, Kind, Skipped

INTERFACES = "etc/network/interfaces"
MAX_FILES = 256
STANZA_END = ("auto", "allow-hotplug", "allow-auto", "source", "source-directory", "mapping")
HOOKS = ("up", "post-up", "pre-up", "down", "pre-down", "post-down")
# ifupdown bridge-utils options -> NetworkManager [bridge] keys.
BRIDGE_KEYS = {
    "fd": "forward-delay",
    "hello": "hello-time",
    "maxage": "max-age",
    "bridgeprio": "priority",
    "ageing": "ageing-time",
}


@dataclass
class _Stanza:
    """One `iface` stanza (both families merged) while the files are read."""

    name: str
    source: str
    methods: Dict[str, str] = field(default_factory=dict)
    family: str = "inet"
    addrs: List[List[str]] = field(default_factory=list)  # [address, family, netmask?]
    gw: Dict[str, str] = field(default_factory=dict)
    dns: List[str] = field(default_factory=list)
    search: List[str] = field(default_factory=list)
    routes: List[Tuple[str, str]] = field(default_factory=list)
    mac: Optional[str] = None
    opts: Dict[str, List[str]] = field(default_factory=dict)  # bond-*, bridge_*, vlan-raw-device


def _files(root: Path, rel: str, seen: List[str], skipped: List[Skipped]) -> List[Tuple[str, str]]:
    """(host path, text) of the interfaces file and its includes, each once."""
    name = "/" + rel.lstrip("/")
    if name in seen or len(seen) >= MAX_FILES or not (root / rel.lstrip("/")).exists():
        return []
    seen.append(name)
    try:
        out = [(model.shown(name), read_host_text(root, rel))]
    except HostFileError as e:
        skipped.append(Skipped(model.shown(name), model.shown(name), str(e).split(": ", 1)[-1]))
        return []
    for line in out[0][1].splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("source", "source-directory"):
            continue
        pattern = parts[1].lstrip("/")
        if not pattern or "**" in pattern or ".." in pattern.split("/"):
            skipped.append(Skipped(out[0][0], out[0][0], f"{line.strip()!r} is not followed"))
            continue
        if parts[0] == "source":
            found = sorted(root.glob(pattern))
        else:
            d = root / pattern
            found = [p for p in sorted(d.glob("*")) if re.fullmatch(r"[\w-]+", p.name)]
        for p in found:  # no `..` and no `**`: every match is inside the tree we read
            out += _files(root, "/" + str(p.relative_to(root)), seen, skipped)
    return out


def _option(cur: _Stanza, key: str, args: List[str], line: str, skipped: List[Skipped]) -> None:
    if key == "address" and args:
        cur.addrs.append([args[0], cur.family])
    elif key == "netmask" and args and cur.addrs:
        cur.addrs[-1].append(args[0])
    elif key == "gateway" and args:
        cur.gw[cur.family] = args[0]
    elif key == "dns-nameservers":
        cur.dns += args
    elif key == "dns-search":
        cur.search += args
    elif key == "hwaddress" and args:
        cur.mac = args[-1]
    elif key in ("up", "post-up") and args[:3] == ["ip", "route", "add"]:
        m = re.fullmatch(r"(\S+) via (\S+)", " ".join(args[3:]))
        if m:
            cur.routes.append((m.group(1), m.group(2)))
        else:
            skipped.append(Skipped(cur.name, cur.source, f"{line!r} is not carried"))
    elif key.startswith(("bond-", "bridge_", "bridge-", "vlan-raw-device", "vlan_raw_device")):
        cur.opts[key.replace("-", "_")] = args
    elif key in HOOKS:
        skipped.append(Skipped(cur.name, cur.source, f"{line!r} is not carried"))


def _stanzas(files: List[Tuple[str, str]], skipped: List[Skipped]) -> Dict[str, _Stanza]:
    stanzas: Dict[str, _Stanza] = {}
    for source, text in files:
        cur: Optional[_Stanza] = None
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "iface" and len(parts) >= 4:
                cur = stanzas.setdefault(parts[1], _Stanza(parts[1], source))
                cur.family = parts[2]
                cur.methods[parts[2]] = parts[3]
            elif parts[0] in STANZA_END:
                cur = None
            elif cur is not None:
                _option(cur, parts[0], parts[1:], line, skipped)
    return stanzas


def _kind(s: _Stanza) -> Dict[str, object]:
    o = s.opts
    if "bond_master" in o:
        return {"controller": model.name(" ".join(o["bond_master"])), "port_kind": Kind.BOND}
    if "bond_slaves" in o or "bond_mode" in o:
        opts = [
            model.option(k[5:], " ".join(v), model.BOND_OPTIONS, "bond")
            for k, v in sorted(o.items())
            if k.startswith("bond_") and k not in ("bond_slaves", "bond_master")
        ]
        return {"kind": Kind.BOND, "options": tuple(opts)}
    if "bridge_ports" in o:
        return {"kind": Kind.BRIDGE, "options": _bridge_options(o)}
    m = re.fullmatch(r"(.+)\.([0-9]{1,4})|vlan([0-9]{1,4})", s.name)
    raw = " ".join(o.get("vlan_raw_device", []))
    if m and (m.group(1) or raw):
        vid = int(m.group(2) or m.group(3))
        if vid > 4094:
            raise HostFileError(f"VLAN id {vid} is out of range")
        return {"kind": Kind.VLAN, "vlan_id": vid, "parent": model.name(raw or m.group(1))}
    return {}


def _bridge_options(o: Dict[str, List[str]]) -> Tuple[Tuple[str, str], ...]:
    out = []
    for key, args in sorted(o.items()):
        word = key[len("bridge_") :]
        if word in ("ports", "maxwait", "waitport"):
            continue
        if word == "stp":
            out.append(("stp", "true" if args[:1] in (["on"], ["yes"]) else "false"))
            continue
        if word not in BRIDGE_KEYS:
            raise HostFileError(f"bridge option {key} is not carried")
        out.append((BRIDGE_KEYS[word], model.option(word, " ".join(args), BRIDGE_KEYS, "")[1]))
    return tuple(out)


def _ports(s: _Stanza) -> List[str]:
    """Port names a bond or bridge stanza lists itself (`none` lists none)."""
    names = s.opts.get("bond_slaves", []) + s.opts.get("bridge_ports", [])
    names = [n for n in names if n != "none"]
    for n in names:
        if n == "all" or not model.NAME_RE.fullmatch(n):
            raise HostFileError(f"port list {' '.join(names)!r} is not carried")
    return names


def _interface(root: Path, s: _Stanza, dns: List[str]) -> Interface:
    extra = _kind(s)
    addrs = [model.cidr(a[0], a[2] if len(a) > 2 else None) for a in s.addrs]
    plain = "kind" not in extra
    return Interface(
        name=model.name(s.name),
        source=s.source,
        mac=(model.mac(s.mac, "hwaddress") if s.mac else model.sys_mac(root, s.name))
        if plain
        else None,
        dhcp4=s.methods.get("inet") == "dhcp",
        dhcp6=s.methods.get("inet6") in ("dhcp", "auto"),
        addresses=tuple(addrs),
        gateway4=model.gateway(s.gw["inet"]) if "inet" in s.gw else None,
        gateway6=model.gateway(s.gw["inet6"]) if "inet6" in s.gw else None,
        routes=tuple(model.route(d, v) for d, v in s.routes),
        dns=model.dns(s.dns or (dns if addrs else [])),
        search=model.domains(s.search),
        **extra,  # type: ignore[arg-type]
    )


def _port(root: Path, name: str, ctl: Interface) -> Interface:
    return Interface(
        name=name,
        source=ctl.source,
        mac=model.sys_mac(root, name),
        controller=ctl.name,
        port_kind=ctl.kind,
    )


def read_ifupdown(root: Path, dns: List[str], skipped: List[Skipped]) -> List[Interface]:
    stanzas = _stanzas(_files(root, INTERFACES, [], skipped), skipped)
    out: List[Interface] = []
    for s in stanzas.values():
        if s.name == "lo" or s.methods.get("inet") == "loopback":
            continue
        try:
            iface = _interface(root, s, dns)
            ports = [n for n in _ports(s) if n not in stanzas] if iface.kind.is_controller else []
        except HostFileError as e:
            skipped.append(Skipped(model.shown(s.name), s.source, str(e)))
            continue
        plain = iface.kind is Kind.ETHERNET and not iface.controller
        if plain and s.methods.get("inet") == "manual" and not s.addrs:
            continue
        out.append(iface)
        out += [_port(root, n, iface) for n in ports]
    return out
