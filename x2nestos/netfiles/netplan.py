"""netplan YAML (/etc/netplan/*.yaml): ethernets, bonds, bridges and VLANs; each value is checked
for the shape netplan documents before it is used (a wrong shape skips the interface or file).

stdlib + hostfacts + netfiles; PyYAML only when it imports (else the files are listed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from x2nestos.hostfacts import HostFileError, read_host_text
from x2nestos.netfiles import model
from x2nestos.netfiles.model import Interface, Kind, Skipped

NETPLAN = "etc/netplan"
NOT_CARRIED = ("wifis", "tunnels", "vrfs", "modems", "nm-devices", "dummy-devices")
# netplan bond parameters -> kernel/NetworkManager names; values of the first four are ms.
BOND_PARAMS = {
    "mii-monitor-interval": "miimon",
    "up-delay": "updelay",
    "down-delay": "downdelay",
    "arp-interval": "arp_interval",
    "mode": "mode",
    "lacp-rate": "lacp_rate",
    "transmit-hash-policy": "xmit_hash_policy",
    "ad-select": "ad_select",
    "min-links": "min_links",
    "primary": "primary",
    "arp-ip-targets": "arp_ip_target",
    "arp-validate": "arp_validate",
    "fail-over-mac-policy": "fail_over_mac",
    "primary-reselect-policy": "primary_reselect",
    "gratuitous-arp": "num_grat_arp",
    "all-members-active": "all_slaves_active",
    "all-slaves-active": "all_slaves_active",
    "learn-packet-interval": "lp_interval",
    "resend-igmp": "resend_igmp",
}
BRIDGE_PARAMS = {
    "priority": "priority",
    "forward-delay": "forward-delay",
    "hello-time": "hello-time",
    "max-age": "max-age",
    "ageing-time": "ageing-time",
    "aging-time": "ageing-time",
    "stp": "stp",
}


def _map(value: Any, what: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, (str, int)) for k in value):
        raise HostFileError(f"{what} is not a mapping")
    return {str(k): v for k, v in value.items()}


def _list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HostFileError(f"{what} is not a list")
    return value


def _scalar(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise HostFileError(f"{what} is not a single value")


def _routes(conf: Dict[str, Any], gws: List[Optional[str]]) -> Tuple[Tuple[str, str], ...]:
    routes = []
    for r in _list(conf.get("routes"), "routes"):
        r = _map(r, "a route")
        to, via = _scalar(r.get("to", ""), "route to"), _scalar(r.get("via", ""), "route via")
        if to in ("default", "0.0.0.0/0", "::/0") and via:
            gws[0], gws[1] = model.default_gateway(via, gws[0], gws[1])
        elif to and via:
            routes.append(model.route(to, via))
        else:
            raise HostFileError(f"route to {to!r} via {via!r} is not carried")
    return tuple(routes)


def _addressing(conf: Dict[str, Any], dns: List[str]) -> Dict[str, Any]:
    """The Interface fields every netplan device type shares."""
    addrs = [model.cidr(_scalar(a, "address")) for a in _list(conf.get("addresses"), "addresses")]
    gws: List[Optional[str]] = [
        model.gateway(_scalar(conf[k], k)) if conf.get(k) else None
        for k in ("gateway4", "gateway6")
    ]
    routes = _routes(conf, gws)
    ns = _map(conf.get("nameservers"), "nameservers")
    servers = [_scalar(x, "nameserver") for x in _list(ns.get("addresses"), "nameservers")]
    search = [_scalar(x, "search domain") for x in _list(ns.get("search"), "search")]
    return {
        "dhcp4": conf.get("dhcp4") in (True, "true", "yes"),
        "dhcp6": conf.get("dhcp6") in (True, "true", "yes"),
        "addresses": tuple(addrs),
        "gateway4": gws[0],
        "gateway6": gws[1],
        "routes": routes,
        "dns": model.dns(servers or (dns if addrs else [])),
        "search": model.domains(search),
    }


def _params(conf: Dict[str, Any], table: Dict[str, str], what: str) -> Tuple[Tuple[str, str], ...]:
    out = []
    for key, value in _map(conf.get("parameters"), f"{what} parameters").items():
        if key not in table:
            raise HostFileError(f"{what} parameter {key} is not carried")
        items = value if isinstance(value, list) else [value]
        text = ",".join(_scalar(v, f"{what} parameter {key}") for v in items)
        if table is BOND_PARAMS and key in list(BOND_PARAMS)[:4] and not text.isdecimal():
            raise HostFileError(f"bond parameter {key}: {text!r} is not a number of ms")
        known = model.BOND_OPTIONS if table is BOND_PARAMS else set(BRIDGE_PARAMS.values())
        out.append(model.option(table[key], text, known, what))
    return tuple(out)


def _device(
    root: Path, kind: str, name: str, conf: Dict[str, Any], ctx: Dict[str, Any]
) -> Interface:
    """One device of section `kind` (ethernets, bonds, bridges, vlans)."""
    source, ports = ctx["source"], ctx["ports"]
    model.name(name)
    extra: Dict[str, Any] = {}
    if kind == "ethernets":
        extra["mac"] = _match_mac(root, name, conf)
    elif kind == "vlans":
        vid = _scalar(conf.get("id", ""), "vlan id")
        if not vid.isdecimal() or int(vid) > 4094:
            raise HostFileError(f"vlan id {vid!r} is not 0-4094")
        link = model.name(_scalar(conf.get("link", ""), "vlan link"), "vlan link")
        extra.update(kind=Kind.VLAN, vlan_id=int(vid), parent=link)
    else:
        table = BOND_PARAMS if kind == "bonds" else BRIDGE_PARAMS
        extra.update(kind=Kind.BOND if kind == "bonds" else Kind.BRIDGE)
        extra["options"] = _params(conf, table, kind[:-1])
    if name in ports:
        extra.update(controller=ports[name][0], port_kind=ports[name][1])
        return Interface(name=name, source=source, **extra)
    return Interface(name=name, source=source, **_addressing(conf, ctx["dns"]), **extra)


def _match_mac(root: Path, name: str, conf: Dict[str, Any]) -> Optional[str]:
    """The MAC an ethernets entry binds to: match.macaddress, else the NIC named like the entry
    (or match.name); a match by driver or by a name pattern is not carried."""
    match = _map(conf.get("match"), "match")
    given = _scalar(match.get("macaddress", ""), "macaddress")
    if given:
        return model.mac(given)
    if "driver" in match:
        raise HostFileError("match by driver is not carried")
    nic = _scalar(match.get("name", name), "match name")
    if not model.NAME_RE.fullmatch(nic):
        raise HostFileError(f"match by name pattern {nic!r} is not carried")
    return model.sys_mac(root, nic)


def _ports(net: Dict[str, Any]) -> Dict[str, Tuple[str, Kind]]:
    """Port name -> (controller, its kind), from the `interfaces:` of bonds and bridges."""
    out = {}
    for section, kind in (("bonds", Kind.BOND), ("bridges", Kind.BRIDGE)):
        for name, conf in _map(net.get(section), section).items():
            for port in _list(_map(conf, name).get("interfaces"), f"{name} interfaces"):
                out[model.name(_scalar(port, f"{name} port"))] = (model.name(name), kind)
    return out


def _document(root: Path, rel: str) -> Dict[str, Any]:
    """The `network:` mapping of one file (HostFileError when it cannot be understood)."""
    import yaml  # checked by the caller

    text = read_host_text(root, rel, utf8=True)
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise HostFileError(f"not valid YAML ({type(e).__name__})") from None
    return _map(_map(doc, "the document").get("network"), "network")


def _read_file(root: Path, f: Path, dns: List[str], skipped: List[Skipped]) -> List[Interface]:
    source = model.shown(f"/{NETPLAN}/{f.name}")
    try:
        net = _document(root, f"{NETPLAN}/{f.name}")
        ports = _ports(net)
        ctx: Dict[str, Any] = {"source": source, "ports": ports, "dns": dns}
    except HostFileError as e:
        skipped.append(Skipped(source, source, str(e).replace(source + ": ", "")))
        return []
    for kind in NOT_CARRIED:
        for name in _map(net.get(kind), kind) if isinstance(net.get(kind), dict) else []:
            skipped.append(Skipped(model.shown(name), source, f"{kind[:-1]} is not carried"))
    out = []
    for kind in ("ethernets", "bonds", "bridges", "vlans"):
        section = net.get(kind)
        for name, conf in section.items() if isinstance(section, dict) else []:
            try:
                out.append(_device(root, kind, str(name), _map(conf, str(name)), ctx))
            except HostFileError as e:
                skipped.append(Skipped(model.shown(str(name)), source, str(e)))
        if section is not None and not isinstance(section, dict):
            skipped.append(Skipped(source, source, f"{kind} is not a mapping"))
    defined = {i.name for i in out}
    for port, (ctl, ctl_kind) in ports.items():  # listed by a bond/bridge only
        if port not in defined and ctl in defined:
            mac = model.sys_mac(root, port)
            out.append(Interface(port, source, mac, controller=ctl, port_kind=ctl_kind))
    return out


def read_netplan(root: Path, dns: List[str], skipped: List[Skipped]) -> List[Interface]:
    d = root / NETPLAN
    files = sorted(d.glob("*.yaml")) if d.is_dir() else []
    if not files:
        return []
    try:
        import yaml  # noqa: F401 - not on every old host: without it netplan is listed, not guessed
    except ImportError:
        for f in files:
            source = model.shown(f"/{NETPLAN}/{f.name}")
            skipped.append(Skipped(source, source, "no YAML parser (PyYAML) on this host"))
        return []
    out = []
    for f in files:
        out += _read_file(root, f, dns, skipped)
    return out
