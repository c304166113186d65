"""NetworkManager keyfiles: written from an Interface, and read back (INI, through configparser)
to check ours and to learn which interface a host's own keyfile configures.

Ports use `master=`/`slave-type=`: NetworkManager before 1.46 ignores `controller=`/`port-type=`.
"""

from __future__ import annotations

import configparser
import ipaddress
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from x2nestos.hostfacts import HostFileError
from x2nestos.netfiles import model
from x2nestos.netfiles.model import Interface, Kind

METHODS = {
    "ipv4": ("auto", "manual", "disabled", "link-local", "shared"),
    "ipv6": ("auto", "manual", "ignore", "disabled", "link-local", "dhcp", "shared"),
}
ETHERNET_SECTIONS = ("ethernet", "802-3-ethernet")
NOT_CARRIED_TYPES = ("wifi", "802-11-wireless", "vpn", "wireguard")


def _ip_lines(iface: Interface, version: int) -> List[str]:
    dhcp, gw = (iface.dhcp4, iface.gateway4) if version == 4 else (iface.dhcp6, iface.gateway6)
    addrs = model.family(iface.addresses, version)
    dns = model.family(iface.dns, version)
    routes = [r for r in iface.routes if ipaddress.ip_network(r[0]).version == version]
    lines = ["", f"[ipv{version}]"]
    if addrs:
        lines.append("method=manual")
    elif dhcp:
        lines.append("method=auto")
    else:
        lines.append("method=disabled" if version == 4 else "method=ignore")
    for i, a in enumerate(addrs, 1):
        lines.append(f"address{i}={a}" + (f",{gw}" if gw and i == 1 else ""))
    for i, (dest, via) in enumerate(routes, 1):
        lines.append(f"route{i}={dest},{via}")
    if dns:
        lines.append("dns=" + "".join(f"{d};" for d in dns))
    if iface.search and (dns or addrs):
        lines.append("dns-search=" + "".join(f"{s};" for s in iface.search))
    return lines


def render(iface: Interface) -> str:
    """A keyfile; a NIC is bound by MAC when known, everything else by interface name."""
    lines = ["[connection]", f"id={iface.name}", f"type={iface.kind.value}", "autoconnect=true"]
    if not iface.matched_by_mac:
        lines.append(f"interface-name={iface.name}")
    if iface.controller and iface.port_kind:
        lines += [f"master={iface.controller}", f"slave-type={iface.port_kind.value}"]
    if iface.kind is Kind.ETHERNET:
        lines += ["", "[ethernet]"]
        if iface.mac:
            lines.append(f"mac-address={iface.mac.upper()}")
    elif iface.kind is Kind.VLAN:
        lines += ["", "[vlan]", f"id={iface.vlan_id}", f"parent={iface.parent}"]
    else:
        opts = list(iface.options)
        if iface.kind is Kind.BOND and not any(k == "mode" for k, _ in opts):
            opts.insert(0, ("mode", "balance-rr"))  # the kernel's default, said explicitly
        lines += ["", f"[{iface.kind.value}]"] + [f"{k}={v}" for k, v in opts]
    if not iface.controller:
        lines += _ip_lines(iface, 4) + _ip_lines(iface, 6)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KeyfileInfo:
    """What a keyfile configures, as far as carrying and the plan need to know."""

    id: str
    type: str
    interface_name: Optional[str]
    mac: Optional[str]
    master: Optional[str]
    method4: str
    method6: str
    addresses: Tuple[str, ...]
    gateways: Tuple[str, ...]


def _ini(text: str, what: str, strict: bool) -> Dict[str, Dict[str, str]]:
    cp = configparser.ConfigParser(
        interpolation=None, strict=strict, delimiters=("=",), default_section="\0none"
    )
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        cp.read_string(text)
    except configparser.Error as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HostFileError(f"{what}: not a keyfile ({first[:120]})") from None
    return {s: dict(cp.items(s)) for s in cp.sections()}


def _addresses(sec: Dict[str, str], what: str) -> Tuple[List[str], List[str]]:
    addrs, gws = [], []
    for key in sorted(k for k in sec if k.startswith(("address", "addresses"))):
        for item in filter(None, (x.strip() for x in sec[key].split(";"))):
            addr, _, gw = item.partition(",")
            addrs.append(model.cidr(addr, what=f"{what} {key}"))
            if gw:
                gws.append(model.gateway(gw, f"{what} {key} gateway"))
    if sec.get("gateway"):
        gws.append(model.gateway(sec["gateway"], f"{what} gateway"))
    return addrs, gws


def parse(text: str, what: str, *, strict: bool = False) -> KeyfileInfo:
    """Read a keyfile; `strict` (for ours) also demands every key NetworkManager needs."""
    ini = _ini(text, what, strict)
    try:
        return _info(ini, strict)
    except HostFileError as e:
        raise HostFileError(f"{what}: {e}") from None


def _info(ini: Dict[str, Dict[str, str]], strict: bool) -> KeyfileInfo:
    conn = ini.get("connection")
    if conn is None:
        raise HostFileError("no [connection] section")
    kind = conn.get("type") or ("ethernet" if any(s in ini for s in ETHERNET_SECTIONS) else "")
    eth = next((ini[s] for s in ETHERNET_SECTIONS if s in ini), {})
    mac = model.mac(eth["mac-address"], "mac-address") if eth.get("mac-address") else None
    ifname = conn.get("interface-name") or None
    addrs: List[str] = []
    gws: List[str] = []
    methods = []
    for fam in ("ipv4", "ipv6"):
        sec = ini.get(fam, {})
        a, g = _addresses(sec, f"[{fam}]")
        addrs, gws = addrs + a, gws + g
        methods.append(sec.get("method", "auto"))
        if strict and methods[-1] not in METHODS[fam]:
            raise HostFileError(f"[{fam}] method={methods[-1]} is unknown")
        if strict and methods[-1] == "manual" and not a:
            raise HostFileError(f"[{fam}] method=manual without an address")
    master = conn.get("master") or conn.get("controller") or None
    if strict:
        _check_ours(ini, conn, kind)
    return KeyfileInfo(
        id=conn.get("id") or "",
        type=kind,
        interface_name=ifname,
        mac=mac,
        master=master,
        method4=methods[0],
        method6=methods[1],
        addresses=tuple(addrs),
        gateways=tuple(gws),
    )


def _check_ours(ini: Dict[str, Dict[str, str]], conn: Dict[str, str], kind: str) -> None:
    if not conn.get("id") or kind not in [k.value for k in Kind]:
        raise HostFileError("[connection] needs id and a known type")
    if kind != "ethernet" or not ini.get("ethernet", {}).get("mac-address"):
        model.name(conn.get("interface-name", ""), "interface-name")
    if conn.get("master"):
        model.name(conn["master"], "master")
        if conn.get("slave-type") not in ("bond", "bridge") or "ipv4" in ini:
            raise HostFileError("a port needs slave-type and no IP settings")
    elif "ipv4" not in ini or "ipv6" not in ini:
        raise HostFileError("no [ipv4]/[ipv6] settings")
    if kind == "vlan":
        vlan = ini.get("vlan", {})
        if not vlan.get("id", "").isdecimal() or not 0 <= int(vlan["id"]) <= 4094:
            raise HostFileError("[vlan] id must be 0-4094")
        model.name(vlan.get("parent", ""), "[vlan] parent")


def check(text: str, what: str) -> KeyfileInfo:
    """A keyfile we generated, read back strictly (raises HostFileError if it is not sound)."""
    return parse(text, what, strict=True)
