"""The host's network configuration, read from NetworkManager, ifcfg, netplan, systemd-networkd
and ifupdown files, rendered as NetworkManager keyfiles matched by MAC address.

stdlib only; netplan is parsed only when PyYAML happens to import (else listed as not carried).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from x2nestos.hostfacts import ROOT

NM_DIR = "etc/NetworkManager/system-connections"


@dataclass(frozen=True)
class Interface:
    """One interface's addressing, independent of where it came from."""

    name: str
    source: str
    mac: Optional[str] = None
    dhcp4: bool = False
    dhcp6: bool = False
    addresses: Tuple[str, ...] = ()  # "addr/prefix", v4 and v6
    gateway4: Optional[str] = None
    gateway6: Optional[str] = None
    routes: Tuple[Tuple[str, str], ...] = ()  # (destination/prefix, via)
    dns: Tuple[str, ...] = ()
    search: Tuple[str, ...] = ()

    def _family(self, version: int) -> List[str]:
        return [a for a in self.addresses if ipaddress.ip_interface(a).version == version]

    def keyfile(self) -> str:
        """A NetworkManager keyfile; bound by MAC when known, else by interface name."""
        lines = ["[connection]", f"id={self.name}", "type=ethernet", "autoconnect=true"]
        if not self.mac:
            lines.append(f"interface-name={self.name}")
        lines += ["", "[ethernet]"]
        if self.mac:
            lines.append(f"mac-address={self.mac.upper()}")
        for version, dhcp, gw in ((4, self.dhcp4, self.gateway4), (6, self.dhcp6, self.gateway6)):
            addrs = self._family(version)
            dns = [d for d in self.dns if ipaddress.ip_address(d).version == version]
            routes = [
                r for r in self.routes if ipaddress.ip_network(r[0], False).version == version
            ]
            lines += ["", f"[ipv{version}]"]
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
            if self.search and (dns or addrs):
                lines.append("dns-search=" + "".join(f"{s};" for s in self.search))
        return "\n".join(lines) + "\n"

    @property
    def file_name(self) -> str:
        safe = re.sub(r"[^\w.-]", "_", self.name)
        return f"{safe}.nmconnection"


@dataclass
class NetworkFacts:
    """What we found: keyfiles to ship (name -> text) and what we could not carry (reasons)."""

    keyfiles: Dict[str, str] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)
    not_carried: List[str] = field(default_factory=list)


def _mac(root: Path, iface: str) -> Optional[str]:
    try:
        mac = (root / "sys/class/net" / iface / "address").read_text().strip()
    except OSError:
        return None
    return mac if re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", mac, re.I) else None


def _iface_of(root: Path, mac: str) -> Optional[str]:
    for d in sorted((root / "sys/class/net").glob("*")):
        if _mac(root, d.name) == mac.lower():
            return d.name
    return None


def _prefix(addr: str, netmask: Optional[str]) -> str:
    if "/" in addr or not netmask:
        return str(ipaddress.ip_interface(addr if "/" in addr else f"{addr}/{_default_len(addr)}"))
    if netmask.isdigit():
        return str(ipaddress.ip_interface(f"{addr}/{netmask}"))
    return str(ipaddress.ip_interface(f"{addr}/{netmask}"))


def _default_len(addr: str) -> int:
    return 32 if ipaddress.ip_address(addr).version == 4 else 128


def resolv_nameservers(root: Path = ROOT) -> List[str]:
    out = []
    try:
        text = (root / "etc/resolv.conf").read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if not ip.is_loopback:
                out.append(parts[1])
    return out


def read_nm_keyfiles(root: Path, facts: NetworkFacts) -> None:
    """NetworkManager keyfiles are already the target format: carry them verbatim."""
    d = root / NM_DIR
    for f in sorted(d.glob("*")) if d.is_dir() else []:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        m = re.search(r"^type=(\S+)", text, re.M)
        kind = m.group(1) if m else "unknown"
        if kind in ("wifi", "802-11-wireless", "vpn", "wireguard"):
            facts.not_carried.append(f"network: {f.name} ({kind} connection)")
            continue
        facts.keyfiles[f.name if f.name.endswith(".nmconnection") else f.name + ".nmconnection"] = (
            text
        )
        facts.sources.append(f"/{NM_DIR}/{f.name}")


def read_ifcfg(root: Path, facts: NetworkFacts, dns: List[str]) -> List[Interface]:
    """RHEL-style /etc/sysconfig/network-scripts/ifcfg-* (openEuler, CentOS, ...)."""
    out = []
    for f in sorted((root / "etc/sysconfig/network-scripts").glob("ifcfg-*")):
        kv: Dict[str, str] = {}
        for line in f.read_text(errors="replace").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, _, v = line.partition("=")
                try:
                    kv[k.strip()] = " ".join(shlex.split(v))
                except ValueError:
                    kv[k.strip()] = v.strip().strip("\"'")
        name = kv.get("DEVICE") or f.name[len("ifcfg-") :]
        if name == "lo":
            continue
        if kv.get("TYPE", "Ethernet") not in ("Ethernet", ""):
            facts.not_carried.append(f"network: {f.name} (type {kv.get('TYPE')})")
            continue
        addrs = []
        for suffix in [""] + [str(i) for i in range(10)]:
            if kv.get("IPADDR" + suffix):
                mask = kv.get("PREFIX" + suffix) or kv.get("NETMASK" + suffix)
                addrs.append(_prefix(kv["IPADDR" + suffix], mask))
        if kv.get("IPV6ADDR"):
            addrs.append(_prefix(kv["IPV6ADDR"], None))
        own_dns = [kv[k] for k in sorted(kv) if re.match(r"^DNS\d+$", k)]
        out.append(
            Interface(
                name=name,
                source=f"/etc/sysconfig/network-scripts/{f.name}",
                mac=(kv.get("HWADDR") or "").lower() or _mac(root, name),
                dhcp4=kv.get("BOOTPROTO", "").lower() in ("dhcp", "bootp"),
                dhcp6=kv.get("DHCPV6C", "").lower() == "yes",
                addresses=tuple(addrs),
                gateway4=kv.get("GATEWAY") or None,
                gateway6=(kv.get("IPV6_DEFAULTGW") or "").split("%")[0] or None,
                dns=tuple(own_dns or (dns if addrs else [])),
                search=tuple((kv.get("DOMAIN") or "").split()),
            )
        )
    return out


def _interfaces_files(root: Path, rel: str, seen: List[Path]) -> List[Tuple[Path, str]]:
    path = root / rel.lstrip("/")
    if path in seen or not path.is_file():
        return []
    seen.append(path)
    out = [(path, path.read_text(errors="replace"))]
    for line in out[0][1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "source":
            for p in sorted(root.glob(parts[1].lstrip("/"))):
                out += _interfaces_files(root, "/" + str(p.relative_to(root)), seen)
        elif len(parts) == 2 and parts[0] == "source-directory":
            for p in sorted((root / parts[1].lstrip("/")).glob("*")):
                if re.match(r"^[\w-]+$", p.name):
                    out += _interfaces_files(root, "/" + str(p.relative_to(root)), seen)
    return out


def read_ifupdown(root: Path, facts: NetworkFacts, dns: List[str]) -> List[Interface]:
    """Debian /etc/network/interfaces (+ `source` includes): inet/inet6 static and dhcp."""
    stanzas: Dict[str, Dict[str, Any]] = {}
    order: List[str] = []
    for path, text in _interfaces_files(root, "etc/network/interfaces", []):
        cur: Optional[Dict[str, Any]] = None
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "iface" and len(parts) >= 4:
                name, family, method = parts[1], parts[2], parts[3]
                cur = stanzas.setdefault(
                    name, {"addrs": [], "routes": [], "dns": [], "search": [], "src": path}
                )
                if name not in order:
                    order.append(name)
                cur[family] = method
                cur["family"] = family
            elif parts[0] in ("auto", "allow-hotplug", "source", "source-directory", "mapping"):
                cur = None
            elif cur is not None:
                key, args = parts[0], parts[1:]
                fam = cur.get("family", "inet")
                if key == "address" and args:
                    cur["addrs"].append([args[0], fam])
                elif key == "netmask" and args and cur["addrs"]:
                    cur["addrs"][-1].append(args[0])
                elif key == "gateway" and args:
                    cur["gw6" if fam == "inet6" else "gw4"] = args[0]
                elif key == "dns-nameservers":
                    cur["dns"] += args
                elif key == "dns-search":
                    cur["search"] += args
                elif key in ("hwaddress",) and args:
                    cur["mac"] = args[-1].lower()
                elif key in ("up", "post-up") and args[:3] == ["ip", "route", "add"]:
                    m = re.match(r"^(\S+) via (\S+)", " ".join(args[3:]))
                    if m:
                        cur["routes"].append((m.group(1), m.group(2)))
                    else:
                        facts.not_carried.append(f"network: {line!r} in {path.name}")
                elif key.startswith(("bond-", "bridge_", "bridge-", "vlan-", "vlan_")):
                    facts.not_carried.append(f"network: {order[-1]} ({key} in {path.name})")
                elif key in ("up", "post-up", "pre-up", "down", "pre-down", "post-down"):
                    facts.not_carried.append(f"network: {line!r} in {path.name}")
    out = []
    for name in order:
        s = stanzas[name]
        if name == "lo" or s.get("inet") == "loopback":
            continue
        if s.get("inet") == "manual" and not s["addrs"]:
            continue
        addrs = [_prefix(a[0], a[2] if len(a) > 2 else None) for a in s["addrs"]]
        out.append(
            Interface(
                name=name,
                source="/" + str(Path(s["src"]).relative_to(root)),
                mac=s.get("mac") or _mac(root, name),
                dhcp4=s.get("inet") == "dhcp",
                dhcp6=s.get("inet6") in ("dhcp", "auto"),
                addresses=tuple(addrs),
                gateway4=s.get("gw4"),
                gateway6=s.get("gw6"),
                routes=tuple(s["routes"]),
                dns=tuple(s["dns"] or (dns if addrs else [])),
                search=tuple(s["search"]),
            )
        )
    return out


def read_netplan(root: Path, facts: NetworkFacts, dns: List[str]) -> List[Interface]:
    files = sorted((root / "etc/netplan").glob("*.yaml"))
    if not files:
        return []
    try:
        import yaml  # not on every old host: without it netplan is reported, not guessed
    except ImportError:
        facts.not_carried += [f"network: /etc/netplan/{f.name} (no YAML parser)" for f in files]
        return []
    out = []
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError:
            facts.not_carried.append(f"network: /etc/netplan/{f.name} (not valid YAML)")
            continue
        net = doc.get("network", {}) if isinstance(doc, dict) else {}
        for kind in ("bonds", "bridges", "vlans", "wifis", "tunnels"):
            for name in net.get(kind) or {}:
                facts.not_carried.append(f"network: {name} ({kind[:-1]} in /etc/netplan/{f.name})")
        for name, conf in (net.get("ethernets") or {}).items():
            conf = conf or {}
            match = conf.get("match") or {}
            addrs = [_prefix(str(a), None) for a in conf.get("addresses") or []]
            gw4, gw6 = conf.get("gateway4"), conf.get("gateway6")
            routes = []
            for r in conf.get("routes") or []:
                to, via = str(r.get("to", "")), str(r.get("via", ""))
                if to in ("default", "0.0.0.0/0", "::/0") and via:
                    if ipaddress.ip_address(via).version == 4:
                        gw4 = via
                    else:
                        gw6 = via
                elif to and via:
                    routes.append((to, via))
            ns = conf.get("nameservers") or {}
            out.append(
                Interface(
                    name=str(name),
                    source=f"/etc/netplan/{f.name}",
                    mac=(str(match.get("macaddress", "")) or "").lower() or _mac(root, str(name)),
                    dhcp4=bool(conf.get("dhcp4")),
                    dhcp6=bool(conf.get("dhcp6")),
                    addresses=tuple(addrs),
                    gateway4=gw4,
                    gateway6=gw6,
                    routes=tuple(routes),
                    dns=tuple(str(x) for x in ns.get("addresses") or (dns if addrs else [])),
                    search=tuple(str(x) for x in ns.get("search") or []),
                )
            )
    return out


def _ini_lists(text: str) -> Dict[str, Dict[str, List[str]]]:
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


def read_networkd(root: Path, facts: NetworkFacts, dns: List[str]) -> List[Interface]:
    """systemd-networkd /etc/systemd/network/*.network matched on one Name= or MACAddress=."""
    out = []
    for f in sorted((root / "etc/systemd/network").glob("*.network")):
        ini = _ini_lists(f.read_text(errors="replace"))
        match, net = ini.get("Match", {}), ini.get("Network", {})
        names = " ".join(match.get("Name", [])).split()
        macs = " ".join(match.get("MACAddress", [])).split()
        if len(names) + len(macs) != 1 or any(c in "".join(names) for c in "*?["):
            facts.not_carried.append(
                f"network: /etc/systemd/network/{f.name} (matches several or wildcard interfaces)"
            )
            continue
        addrs = net.get("Address", []) + ini.get("Address", {}).get("Address", [])
        gws = net.get("Gateway", []) + ini.get("Route", {}).get("Gateway", [])
        dhcp = (net.get("DHCP") or ["no"])[-1].lower()
        name = names[0] if names else _iface_of(root, macs[0]) or "mac-" + macs[0].replace(":", "")
        out.append(
            Interface(
                name=name,
                source=f"/etc/systemd/network/{f.name}",
                mac=macs[0].lower() if macs else _mac(root, name),
                dhcp4=dhcp in ("yes", "true", "ipv4"),
                dhcp6=dhcp in ("yes", "true", "ipv6"),
                addresses=tuple(_prefix(a, None) for a in addrs),
                gateway4=next((g for g in gws if ipaddress.ip_address(g).version == 4), None),
                gateway6=next((g for g in gws if ipaddress.ip_address(g).version == 6), None),
                dns=tuple(" ".join(net.get("DNS", [])).split() or (dns if addrs else [])),
                search=tuple(" ".join(net.get("Domains", [])).split()),
            )
        )
    return out


def read_network(root: Path = ROOT) -> NetworkFacts:
    """Keyfiles for every configured interface; NetworkManager's own files take precedence."""
    facts = NetworkFacts()
    read_nm_keyfiles(root, facts)
    dns = resolv_nameservers(root)
    taken = {re.sub(r"\.nmconnection$", "", k) for k in facts.keyfiles}
    for reader in (read_ifcfg, read_netplan, read_networkd, read_ifupdown):
        for iface in reader(root, facts, dns):
            if iface.name in taken:
                continue
            if not iface.mac:
                facts.not_carried.append(
                    f"network: {iface.name} has no known MAC; matched by name, which may change"
                )
            facts.keyfiles[iface.file_name] = iface.keyfile()
            facts.sources.append(iface.source)
            taken.add(iface.name)
    return facts
