"""RHEL-style network-scripts (openEuler, CentOS, ...): ifcfg-* files and the global GATEWAY of
/etc/sysconfig/network; Ethernet, VLAN, bond and bridge devices and their ports.

stdlib + hostfacts + netfiles only.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

from x2nestos.hostfacts import HostFileError, read_host_text
from x2nestos.netfiles import model
from x2nestos.netfiles.model import Interface, Kind, Skipped

SCRIPTS = "etc/sysconfig/network-scripts"
GLOBAL = "etc/sysconfig/network"


def parse_kv(text: str) -> Dict[str, str]:
    """Shell-style KEY=value lines (quotes removed; comments and junk lines ignored)."""
    kv: Dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            try:
                kv[k.strip()] = " ".join(shlex.split(v))
            except ValueError:
                kv[k.strip()] = v.strip().strip("\"'")
    return kv


def _addresses(kv: Dict[str, str]) -> List[str]:
    addrs = []
    for suffix in [""] + [str(i) for i in range(10)]:
        if kv.get("IPADDR" + suffix):
            key = ("PREFIX" if kv.get("PREFIX" + suffix) else "NETMASK") + suffix
            addrs.append(model.cidr(kv["IPADDR" + suffix], kv.get(key), f"IPADDR{suffix}", key))
    v6 = [kv.get("IPV6ADDR", "")] + kv.get("IPV6ADDR_SECONDARIES", "").split()
    addrs += [model.cidr(a, None, "IPV6ADDR") for a in v6 if a]
    return addrs


def _bond_options(kv: Dict[str, str]) -> Tuple[Tuple[str, str], ...]:
    out = []
    for item in kv.get("BONDING_OPTS", "").split():
        key, eq, value = item.partition("=")
        if not eq:
            raise HostFileError(f"BONDING_OPTS item {item!r} is not key=value")
        out.append(model.option(key, value, model.BOND_OPTIONS, "bond"))
    return tuple(out)


def _bridge_options(kv: Dict[str, str]) -> Tuple[Tuple[str, str], ...]:
    out = []
    stp = kv.get("STP", "").lower()
    if stp:
        out.append(("stp", "true" if stp in ("on", "yes") else "false"))
    if kv.get("DELAY"):
        out.append(model.option("forward_delay", kv["DELAY"], model.BRIDGE_OPTIONS, "bridge"))
    for item in kv.get("BRIDGING_OPTS", "").split():
        key, _, value = item.partition("=")
        out.append(model.option(key, value, model.BRIDGE_OPTIONS, "bridge"))
    return tuple((model.BRIDGE_OPTIONS.get(k, k), v) for k, v in out)


def _vlan(kv: Dict[str, str], dev: str) -> Dict[str, object]:
    m = re.fullmatch(r"(.+)\.([0-9]{1,4})|vlan([0-9]{1,4})", dev)
    vid = kv.get("VLAN_ID") or (m.group(2) or m.group(3) if m else "")
    parent = kv.get("PHYSDEV") or (m.group(1) if m and m.group(1) else "")
    if not re.fullmatch(r"[0-9]{1,4}", vid) or int(vid) > 4094:
        raise HostFileError(f"VLAN {dev}: no VLAN id (VLAN_ID= or DEVICE=parent.id)")
    if not parent:
        raise HostFileError(f"VLAN {dev}: no parent device (PHYSDEV= or DEVICE=parent.id)")
    return {"kind": Kind.VLAN, "vlan_id": int(vid), "parent": model.name(parent, "PHYSDEV")}


def _kind(kv: Dict[str, str], dev: str) -> Dict[str, object]:
    """The device kind and its own settings, or HostFileError for one we do not carry."""
    typ = kv.get("TYPE", "")
    if kv.get("VLAN", "").lower() == "yes" or typ.lower() == "vlan":
        return _vlan(kv, dev)
    if typ.lower() == "bond" or kv.get("BONDING_MASTER", "").lower() == "yes":
        return {"kind": Kind.BOND, "options": _bond_options(kv)}
    if typ.lower() == "bridge":
        return {"kind": Kind.BRIDGE, "options": _bridge_options(kv)}
    if typ not in ("Ethernet", ""):
        raise HostFileError(f"type {typ} is not carried")
    if kv.get("MASTER"):
        return {"controller": model.name(kv["MASTER"], "MASTER"), "port_kind": Kind.BOND}
    if kv.get("BRIDGE"):
        return {"controller": model.name(kv["BRIDGE"], "BRIDGE"), "port_kind": Kind.BRIDGE}
    return {}


def _interface(root: Path, kv: Dict[str, str], dev: str, source: str, dns: List[str]) -> Interface:
    extra = _kind(kv, dev)
    kind = extra.get("kind", Kind.ETHERNET)
    mac = None
    if kind is Kind.ETHERNET:
        mac = model.mac(kv["HWADDR"], "HWADDR") if kv.get("HWADDR") else model.sys_mac(root, dev)
    addrs = [] if extra.get("controller") else _addresses(kv)
    own_dns = [kv[k] for k in sorted(kv) if re.fullmatch(r"DNS[0-9]+", k)]
    gw6 = kv.get("IPV6_DEFAULTGW")
    return Interface(
        name=dev,
        source=source,
        mac=mac,
        dhcp4=kv.get("BOOTPROTO", "").lower() in ("dhcp", "bootp"),
        dhcp6=kv.get("DHCPV6C", "").lower() == "yes",
        addresses=tuple(addrs),
        gateway4=model.gateway(kv["GATEWAY"], "GATEWAY") if kv.get("GATEWAY") else None,
        gateway6=model.gateway(gw6, "IPV6_DEFAULTGW") if gw6 else None,
        dns=model.dns(own_dns or (dns if addrs else [])),
        search=model.domains((kv.get("DOMAIN") or "").split()),
        **extra,  # type: ignore[arg-type]
    )


def _global_gateway(root: Path, out: List[Interface], skipped: List[Skipped]) -> List[Interface]:
    """CentOS's GATEWAY= in /etc/sysconfig/network: for GATEWAYDEV, else for the one static
    interface whose subnet holds it (as the network scripts use it)."""
    source = "/" + GLOBAL
    try:
        kv = parse_kv(read_host_text(root, GLOBAL)) if (root / GLOBAL).exists() else {}
        gw = model.gateway(kv["GATEWAY"], "GATEWAY") if kv.get("GATEWAY") else None
    except HostFileError as e:
        skipped.append(Skipped(source, source, str(e)))
        return out
    if gw is None:
        return out
    dev = kv.get("GATEWAYDEV")
    hop = ipaddress.ip_address(gw)
    for i, iface in enumerate(out):
        if iface.gateway4 or iface.controller or not model.family(iface.addresses, 4):
            continue
        nets = [ipaddress.ip_interface(a).network for a in model.family(iface.addresses, 4)]
        if iface.name == dev or (not dev and any(hop in n for n in nets)):
            out[i] = _with_gateway(iface, gw)
            return out
    skipped.append(Skipped(source, source, f"GATEWAY={gw} fits no static interface"))
    return out


def _with_gateway(iface: Interface, gw: str) -> Interface:
    return replace(iface, gateway4=gw, source=f"{iface.source} + /{GLOBAL}")


def read_ifcfg(root: Path, dns: List[str], skipped: List[Skipped]) -> List[Interface]:
    out = []
    d = root / SCRIPTS
    for f in sorted(d.glob("ifcfg-*")) if d.is_dir() else []:
        source = model.shown(f"/{SCRIPTS}/{f.name}")
        dev = f.name[len("ifcfg-") :]
        try:
            kv = parse_kv(read_host_text(root, f"{SCRIPTS}/{f.name}"))
            dev = kv.get("DEVICE") or dev
            if dev == "lo":
                continue
            if ":" in dev:
                raise HostFileError("IP alias files are not carried")
            out.append(_interface(root, kv, model.name(dev), source, dns))
        except HostFileError as e:
            skipped.append(Skipped(model.shown(dev), source, str(e).replace(source + ": ", "")))
    return _global_gateway(root, out, skipped)
