"""The host's runtime network state: links, addresses (with the DHCP `dynamic` flag) and routes,
parsed from the JSON of `ip -d -j addr` / `ip -j route` / `ip -j -6 route`.

The JSON is an input: captured here through nestos_installer.run on the live host, or read from
run/x2nestos/ip-*.json in a host tree (tests, a tree fetched over SSH). stdlib + run only.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nestos_installer import run as runner
from nestos_installer.errors import NestosError
from x2nestos.hostfacts import ROOT, HostFileError, read_host_text
from x2nestos.netfiles import model

RUNTIME_DIR = "run/x2nestos"
# file in RUNTIME_DIR -> the command whose JSON it holds
COMMANDS = {
    "ip-addr.json": ("ip", "-d", "-j", "addr", "show"),
    "ip-route.json": ("ip", "-j", "route", "show", "table", "main"),
    "ip-route6.json": ("ip", "-j", "-6", "route", "show", "table", "main"),
}


@dataclass(frozen=True)
class Address:
    cidr: str
    dynamic: bool  # handed out by DHCP/SLAAC: carried as DHCP, not as a fixed address


@dataclass(frozen=True)
class Link:
    name: str
    mac: Optional[str]
    kind: str  # "" for a plain NIC, else the kernel's info_kind (bond, bridge, vlan, ...)
    loopback: bool
    controller: Optional[str]  # the bond/bridge this link is a port of
    addresses: Tuple[Address, ...]


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a network
    gateway: Optional[str]
    dev: Optional[str]
    protocol: str


@dataclass(frozen=True)
class RuntimeState:
    links: Tuple[Link, ...] = ()
    routes: Tuple[Route, ...] = ()
    source: str = ""  # where the state came from, for the plan
    problems: Tuple[str, ...] = ()  # why (part of) it could not be read

    @property
    def known(self) -> bool:
        return bool(self.links) and not self.problems

    def link(self, name: str) -> Optional[Link]:
        return next((x for x in self.links if x.name == name), None)

    def default_devices(self) -> List[str]:
        out: List[str] = []
        for r in self.routes:
            if r.dst == "default" and r.dev and r.dev not in out:
                out.append(r.dev)
        return out


def _json_list(text: str, what: str) -> List[Dict[str, Any]]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise HostFileError(f"{what}: not JSON ({type(e).__name__})") from None
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise HostFileError(f"{what}: not a list of objects")
    return doc


def _str(obj: Dict[str, Any], key: str, what: str) -> Optional[str]:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise HostFileError(f"{what}: {key} is not a string")
    return value


def _address(a: Any, what: str) -> Optional[Address]:
    """A global unicast address of one `addr_info` entry, or None for the rest."""
    if not isinstance(a, dict) or a.get("family") not in ("inet", "inet6"):
        return None
    local, plen = _str(a, "local", what) or "", a.get("prefixlen")
    if a.get("scope") not in ("global", None) or type(plen) is not int:
        return None
    try:
        addr = model.cidr(f"{local}/{plen}", what=f"{what} address")
    except HostFileError:
        return None  # loopback, link-local or malformed: nothing to carry
    if ipaddress.ip_interface(addr).is_link_local:
        return None
    return Address(addr, a.get("dynamic") is True)


def parse_ip_addr(text: str, what: str = "ip -j addr") -> Tuple[Link, ...]:
    out = []
    for obj in _json_list(text, what):
        name = _str(obj, "ifname", what)
        if not name or not model.NAME_RE.fullmatch(name):
            continue
        info = obj.get("linkinfo")
        kind = info.get("info_kind") if isinstance(info, dict) else None
        mac = _str(obj, "address", what)
        infos = obj.get("addr_info")
        addrs = [_address(a, f"{what} {name}") for a in infos] if isinstance(infos, list) else []
        out.append(
            Link(
                name=name,
                mac=mac.lower() if mac and model.MAC_RE.fullmatch(mac.lower()) else None,
                kind=kind if isinstance(kind, str) else "",
                loopback=obj.get("link_type") == "loopback",
                controller=_str(obj, "master", what),
                addresses=tuple(a for a in addrs if a is not None),
            )
        )
    return tuple(out)


def parse_ip_route(text: str, what: str = "ip -j route") -> Tuple[Route, ...]:
    out = []
    for obj in _json_list(text, what):
        dst = _str(obj, "dst", what) or ""
        gw = _str(obj, "gateway", what)
        if gw is not None:
            try:
                gw = model.gateway(gw, f"{what} gateway")
            except HostFileError:
                gw = None
        out.append(Route(dst, gw, _str(obj, "dev", what), _str(obj, "protocol", what) or ""))
    return tuple(out)


def parse_runtime(texts: Dict[str, str], source: str) -> RuntimeState:
    """The state from the JSON texts (keys: the file names of COMMANDS); never raises."""
    links: Tuple[Link, ...] = ()
    routes: List[Route] = []
    problems = []
    for name, text in texts.items():
        what = f"{source}/{name}" if source.startswith("/") else " ".join(COMMANDS[name])
        try:
            if name == "ip-addr.json":
                links = parse_ip_addr(text, what)
            else:
                routes += parse_ip_route(text, what)
        except HostFileError as e:
            problems.append(str(e))
    if "ip-addr.json" not in texts:
        problems.append(f"{source}: no ip-addr.json")
    return RuntimeState(links, tuple(routes), source, tuple(problems))


def _capture(commands: Sequence[Tuple[str, ...]]) -> Dict[str, str]:
    out = {}
    for name, argv in COMMANDS.items():
        if argv in commands:
            proc = runner.run(list(argv), timeout=30, reason="read the runtime network state")
            out[name] = proc.stdout.decode("utf-8", "replace")
    return out


def read_runtime(root: Path = ROOT) -> RuntimeState:
    """The live host's state from `ip` (root is /), else the JSON files stored in the tree."""
    if root == ROOT:
        try:
            return parse_runtime(_capture(list(COMMANDS.values())), "ip")
        except (NestosError, OSError) as e:
            return RuntimeState(source="ip", problems=(str(e),))
    texts = {}
    for name in COMMANDS:
        rel = f"{RUNTIME_DIR}/{name}"
        if (root / rel).exists() or name == "ip-addr.json":
            try:
                texts[name] = read_host_text(root, rel)
            except HostFileError as e:
                return RuntimeState(source="/" + RUNTIME_DIR, problems=(str(e),))
    return parse_runtime(texts, "/" + RUNTIME_DIR)
