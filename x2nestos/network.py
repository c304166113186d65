"""The host's network as NestOS will have it: config files (netfiles/*) and the runtime state
(netstate) merged into NetworkManager keyfiles, one verdict per interface, and the check that
the interface carrying the host (default route, SSH session) is carried. stdlib only.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from x2nestos.hostfacts import ROOT, HostFileError, read_host_text
from x2nestos.netfiles import keyfile, model
from x2nestos.netfiles.ifcfg import read_ifcfg
from x2nestos.netfiles.ifupdown import read_ifupdown
from x2nestos.netfiles.model import Interface, Kind, Skipped
from x2nestos.netfiles.netplan import read_netplan
from x2nestos.netfiles.networkd import read_networkd
from x2nestos.netfiles.nm import HostKeyfile, read_nm_keyfiles
from x2nestos.netstate import Link, RuntimeState
from x2nestos.preflight import Check, Status

READERS = (read_ifcfg, read_netplan, read_networkd, read_ifupdown)
RUNTIME_SOURCE = "runtime state (ip addr)"


class NetworkMode(enum.Enum):
    """--network: carry the host's configuration, or let NestOS use DHCP everywhere."""

    CARRY = "carry"
    DHCP = "dhcp"


@dataclass(frozen=True)
class IfacePlan:
    """What one interface becomes on NestOS."""

    name: str
    becomes: str  # static, dhcp, port of X, no address, not carried
    detail: str
    source: str
    mac: Optional[str] = None
    has_gateway: bool = False
    addresses: Tuple[str, ...] = ()

    @property
    def carried(self) -> bool:
        return self.becomes != "not carried"

    def to_json(self) -> Dict[str, Any]:
        return {
            "interface": self.name,
            "becomes": self.becomes,
            "detail": self.detail,
            "from": self.source,
        }

    def line(self) -> str:
        return model.shown(f"{self.name}: {self.becomes} ({self.detail}) from {self.source}")


@dataclass
class NetworkFacts:
    """Keyfiles to ship (name -> text), what each interface becomes, what is not carried."""

    keyfiles: Dict[str, str] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)
    not_carried: List[str] = field(default_factory=list)
    interfaces: List[IfacePlan] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def plan_of(self, name: str, mac: Optional[str]) -> Optional[IfacePlan]:
        """The carried profile of an interface (by name, or by the MAC it is bound to)."""
        carried = [p for p in self.interfaces if p.carried]
        return next((p for p in carried if p.name == name), None) or next(
            (p for p in carried if mac and p.mac == mac), None
        )


def resolv_nameservers(root: Path = ROOT) -> List[str]:
    try:
        text = read_host_text(root, "etc/resolv.conf")
    except HostFileError:
        return []
    out = []
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


def describe(iface: Interface) -> Tuple[str, str]:
    """(becomes, detail) of a profile we generate."""
    kind = {
        Kind.BOND: "bond " + " ".join(f"{k}={v}" for k, v in iface.options),
        Kind.BRIDGE: "bridge",
        Kind.VLAN: f"VLAN {iface.vlan_id} on {iface.parent}",
    }.get(iface.kind, f"MAC {iface.mac}" if iface.mac else "matched by name")
    if iface.controller:
        return f"port of {iface.controller}", kind
    parts = [kind.strip()]
    parts += list(iface.addresses)
    parts += [f"gateway {g}" for g in (iface.gateway4, iface.gateway6) if g]
    parts += [f"DNS {' '.join(iface.dns)}"] if iface.dns else []
    if iface.addresses:
        return "static", ", ".join(parts)
    if iface.dhcp4 or iface.dhcp6:
        return "dhcp", ", ".join(parts)
    return "no address", ", ".join(parts)


def _host_keyfile_plan(hk: HostKeyfile) -> IfacePlan:
    info = hk.info
    if info.master:
        becomes, detail = f"port of {info.master}", info.type
    elif info.addresses:
        becomes = "static"
        detail = ", ".join(info.addresses + tuple(f"gateway {g}" for g in info.gateways))
    elif "auto" in (info.method4, info.method6) or info.method6 == "dhcp":
        becomes, detail = "dhcp", info.type
    else:
        becomes, detail = "no address", info.type
    name = hk.device or hk.stem
    has_gw = bool(info.gateways) or becomes == "dhcp"
    detail = f"{detail}, keyfile as is"
    return IfacePlan(name, becomes, detail, hk.source, info.mac, has_gw, info.addresses)


def _add(facts: NetworkFacts, iface: Interface, skipped: List[Skipped]) -> None:
    text = keyfile.render(iface)
    try:
        keyfile.check(text, iface.file_name)
    except HostFileError as e:  # a bug of ours; never ship a profile NetworkManager rejects
        skipped.append(Skipped(iface.name, iface.source, f"generated keyfile rejected: {e}"))
        return
    facts.keyfiles[iface.file_name] = text
    facts.sources.append(iface.source)
    becomes, detail = describe(iface)
    gw = bool(iface.gateway4 or iface.gateway6 or iface.dhcp4 or iface.dhcp6)
    facts.interfaces.append(
        IfacePlan(iface.name, becomes, detail, iface.source, iface.mac, gw, iface.addresses)
    )
    if iface.kind is Kind.ETHERNET and not iface.mac:
        facts.not_carried.append(
            f"network: {iface.name} has no known MAC; matched by name, which may change"
        )


def _config(root: Path, facts: NetworkFacts, skipped: List[Skipped]) -> List[Interface]:
    """Interfaces from the config files; NetworkManager's own keyfiles take precedence."""
    taken = set()
    for hk in read_nm_keyfiles(root, skipped):
        facts.keyfiles[hk.file_name] = hk.text
        facts.sources.append(hk.source)
        facts.interfaces.append(_host_keyfile_plan(hk))
        taken |= {hk.stem} | ({hk.device} if hk.device else set())
    dns = resolv_nameservers(root)
    found: List[Interface] = []
    for reader in READERS:
        for iface in reader(root, dns, skipped):
            if iface.name not in taken:
                found.append(iface)
                taken.add(iface.name)
    names = {i.name for i in found if i.kind.is_controller} | taken
    for iface in [i for i in found if i.controller and i.controller not in names]:
        skipped.append(
            Skipped(iface.name, iface.source, f"port of {iface.controller}, which is not carried")
        )
        found.remove(iface)
    return found


def _runtime_interface(link: Link, runtime: RuntimeState, dns: List[str]) -> Interface:
    """A NIC configured only at runtime (DHCP client, cloud-init, `ip addr add`)."""
    static = tuple(a.cidr for a in link.addresses if not a.dynamic)
    dyn = [ipaddress.ip_interface(a.cidr).version for a in link.addresses if a.dynamic]
    gws = {ipaddress.ip_address(r.gateway).version: r.gateway for r in runtime.routes
           if r.dst == "default" and r.dev == link.name and r.gateway}  # fmt: skip
    routes = [
        model.route(r.dst, r.gateway)
        for r in runtime.routes
        if r.dev == link.name
        and r.gateway
        and r.dst != "default"
        and r.protocol in ("static", "boot")
    ]
    return Interface(
        name=link.name,
        source=RUNTIME_SOURCE,
        mac=link.mac,
        dhcp4=4 in dyn,
        dhcp6=6 in dyn,
        addresses=static,
        gateway4=gws.get(4) if static else None,
        gateway6=gws.get(6) if static else None,
        routes=tuple(routes) if static else (),
        dns=tuple(dns) if static else (),
    )


def _merge_runtime(
    root: Path, facts: NetworkFacts, runtime: RuntimeState, skipped: List[Skipped]
) -> None:
    dns = resolv_nameservers(root)
    for link in runtime.links:
        if link.loopback or link.controller or not link.addresses:
            continue
        plan = facts.plan_of(link.name, link.mac)
        if plan is not None:
            extra = [
                a.cidr for a in link.addresses if not a.dynamic and a.cidr not in plan.addresses
            ]
            for cidr in extra:
                facts.not_carried.append(
                    f"network: {cidr} on {link.name} exists only at runtime (not in {plan.source})"
                )
            continue
        if any(s.what == link.name for s in skipped):
            continue  # its config file is listed with the reason; do not guess around it
        if link.kind:
            skipped.append(
                Skipped(
                    link.name,
                    RUNTIME_SOURCE,
                    f"a {link.kind} device configured only at runtime is not carried",
                )
            )
            continue
        _add(facts, _runtime_interface(link, runtime, dns), skipped)


def read_network(root: Path = ROOT, runtime: Optional[RuntimeState] = None) -> NetworkFacts:
    """Keyfiles for every configured interface (and, given the runtime state, for NICs that
    have addresses only at runtime); everything else listed with the file and the reason."""
    facts = NetworkFacts()
    skipped: List[Skipped] = []
    for iface in _config(root, facts, skipped):
        _add(facts, iface, skipped)
    if runtime is not None and runtime.known:
        _merge_runtime(root, facts, runtime, skipped)
    elif runtime is not None:
        facts.notes += [f"network: runtime state not read: {p}" for p in runtime.problems]
    for s in skipped:
        facts.not_carried.append(s.line())
        if model.NAME_RE.fullmatch(s.what) and facts.plan_of(s.what, None) is None:
            facts.interfaces.append(IfacePlan(s.what, "not carried", s.reason, s.source))
    return facts


def dhcp_facts(runtime: Optional[RuntimeState]) -> NetworkFacts:
    """--network dhcp: nothing carried; NestOS's NetworkManager runs DHCP on every NIC."""
    facts = NetworkFacts()
    for link in runtime.links if runtime is not None else ():
        if not link.loopback and not link.controller and not link.kind:
            facts.interfaces.append(
                IfacePlan(link.name, "dhcp", "--network dhcp", "NestOS default", link.mac, True)
            )
    return facts


def check(
    facts: NetworkFacts,
    runtime: Optional[RuntimeState],
    *,
    mode: NetworkMode,
    carried: bool,
    must_carry: Sequence[str] = (),
) -> Check:
    """FAIL unless the default route's interface (and `must_carry`, e.g. the one holding the
    controller's SSH session) is carried, or the user chose --network dhcp."""
    if mode is NetworkMode.DHCP:
        return Check("network", Status.OK, "--network dhcp: NestOS uses DHCP on every interface")
    known = runtime is not None and runtime.known
    need = (runtime.default_devices() if runtime is not None and known else []) + [
        d for d in must_carry if d
    ]
    bad, warn, good = [], [], []
    for dev in dict.fromkeys(need):
        link = runtime.link(dev) if runtime is not None else None
        plan = facts.plan_of(dev, link.mac if link else None) if carried else None
        if plan is None:
            why = next((p.detail for p in facts.interfaces if p.name == dev), None)
            why = why or ("network is not in --carry" if not carried else "no configuration found")
            bad.append(f"{dev} is not carried ({why})")
        elif not plan.has_gateway and runtime is not None and dev in runtime.default_devices():
            warn.append(f"{dev} is carried without the default gateway it has now")
        else:
            good.append(f"{dev}: {plan.becomes}")
    if bad:
        return Check(
            "network",
            Status.FAIL,
            "the interface that carries this host: "
            + "; ".join(bad)
            + "; fix it or pass --network dhcp",
        )
    if warn:
        return Check("network", Status.WARN, "; ".join(warn))
    if not known:
        why = "; ".join(runtime.problems) if runtime is not None else "not read"
        return Check(
            "network",
            Status.WARN,
            f"runtime state unknown ({why}): the default route's interface was not checked",
        )
    if not good:
        return Check("network", Status.INFO, "no default route at runtime")
    return Check("network", Status.OK, "carried: " + ", ".join(good))
