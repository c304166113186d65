"""systemd-networkd /etc/systemd/network/*.network matched on one Name= or MACAddress=; bonds,
bridges and VLANs (.netdev, Bond=/Bridge=/VLAN=) are listed as not carried.

stdlib + hostfacts + netfiles only.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Dict, List

from x2nestos.hostfacts import HostFileError, read_host_text
from x2nestos.netfiles import model
from x2nestos.netfiles.model import Interface, Skipped

NETWORKD = "etc/systemd/network"
VIRTUAL_KEYS = ("Bond", "Bridge", "VLAN", "MACVLAN", "VXLAN", "Tunnel", "VRF")


def ini_lists(text: str) -> Dict[str, Dict[str, List[str]]]:
    """systemd-style INI: repeated keys accumulate (Address= may appear several times)."""
    out: Dict[str, Dict[str, List[str]]] = {}
    section: Dict[str, List[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
        elif "=" in line:
            k, _, v = line.partition("=")
            section.setdefault(k.strip(), []).append(v.strip())
    return out


Ini = Dict[str, Dict[str, List[str]]]


def _interface(root: Path, ini: Ini, source: str, dns: List[str]) -> Interface:
    match, net = ini.get("Match", {}), ini.get("Network", {})
    names = " ".join(match.get("Name", [])).split()
    macs = " ".join(match.get("MACAddress", [])).split()
    if len(names) + len(macs) != 1 or any(c in "".join(names) for c in "*?[!"):
        raise HostFileError("matches several or wildcard interfaces")
    virtual = [k for k in VIRTUAL_KEYS if net.get(k)]
    if virtual:
        raise HostFileError(f"{virtual[0]}= (a port or virtual device) is not carried")
    mac = model.mac(macs[0], "MACAddress") if macs else None
    name = (
        names[0]
        if names
        else model.iface_of_mac(root, mac or "") or "mac-" + (mac or "").replace(":", "")
    )
    addrs = [
        model.cidr(a) for a in net.get("Address", []) + ini.get("Address", {}).get("Address", [])
    ]
    gws = [
        model.gateway(g) for g in net.get("Gateway", []) + ini.get("Route", {}).get("Gateway", [])
    ]
    dhcp = (net.get("DHCP") or ["no"])[-1].lower()
    servers = " ".join(net.get("DNS", [])).split()
    return Interface(
        name=model.name(name),
        source=source,
        mac=mac or model.sys_mac(root, name),
        dhcp4=dhcp in ("yes", "true", "ipv4"),
        dhcp6=dhcp in ("yes", "true", "ipv6"),
        addresses=tuple(addrs),
        gateway4=next((g for g in gws if ipaddress.ip_address(g).version == 4), None),
        gateway6=next((g for g in gws if ipaddress.ip_address(g).version == 6), None),
        dns=model.dns(servers or (dns if addrs else [])),
        search=model.domains(" ".join(net.get("Domains", [])).split()),
    )


def read_networkd(root: Path, dns: List[str], skipped: List[Skipped]) -> List[Interface]:
    d = root / NETWORKD
    out = []
    for f in sorted(d.glob("*.netdev")) if d.is_dir() else []:
        source = model.shown(f"/{NETWORKD}/{f.name}")
        skipped.append(
            Skipped(source, source, "virtual devices of systemd-networkd are not carried")
        )
    for f in sorted(d.glob("*.network")) if d.is_dir() else []:
        source = model.shown(f"/{NETWORKD}/{f.name}")
        ini: Ini = {}
        try:
            ini = ini_lists(read_host_text(root, f"{NETWORKD}/{f.name}"))
            out.append(_interface(root, ini, source, dns))
        except HostFileError as e:
            names = ini.get("Match", {}).get("Name", [])
            what = names[0] if len(names) == 1 and model.NAME_RE.fullmatch(names[0]) else source
            skipped.append(Skipped(what, source, str(e).replace(source + ": ", "")))
    return out
