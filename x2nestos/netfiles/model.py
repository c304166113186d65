"""One interface's addressing as every reader produces it, and the validators that turn host
file values into it (a bad value raises HostFileError naming it; the reader skips that interface).

stdlib + hostfacts only.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from x2nestos.hostfacts import HostFileError

NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,15}")  # IFNAMSIZ - 1; nothing a keyfile could misread
MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
DOMAIN_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,252}")
OPTION_RE = re.compile(r"[A-Za-z0-9_.,:/+-]{1,128}")
# Bond options NetworkManager accepts in [bond] (the kernel's names, as BONDING_OPTS has them).
BOND_OPTIONS = frozenset(
    "mode miimon updelay downdelay arp_interval arp_ip_target arp_validate arp_all_targets "
    "primary primary_reselect fail_over_mac use_carrier ad_select xmit_hash_policy resend_igmp "
    "lacp_rate active_slave ad_actor_sys_prio ad_actor_system ad_user_port_key "
    "all_slaves_active num_grat_arp num_unsol_na min_links packets_per_slave tlb_dynamic_lb "
    "lp_interval".split()
)
# ifcfg bridge keys / BRIDGING_OPTS names -> NetworkManager [bridge] keys.
BRIDGE_OPTIONS = {
    "priority": "priority",
    "hello_time": "hello-time",
    "max_age": "max-age",
    "ageing_time": "ageing-time",
    "forward_delay": "forward-delay",
}


class Kind(enum.Enum):
    """What NetworkManager profile an interface becomes."""

    ETHERNET = "ethernet"
    BOND = "bond"
    BRIDGE = "bridge"
    VLAN = "vlan"

    @property
    def is_controller(self) -> bool:
        return self in (Kind.BOND, Kind.BRIDGE)


@dataclass(frozen=True)
class Interface:
    """One interface's addressing, independent of where it came from (values validated)."""

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
    kind: Kind = Kind.ETHERNET
    options: Tuple[Tuple[str, str], ...] = ()  # [bond] / [bridge] keys, NetworkManager names
    vlan_id: Optional[int] = None
    parent: Optional[str] = None
    controller: Optional[str] = None  # the bond or bridge this interface is a port of
    port_kind: Optional[Kind] = None

    @property
    def file_name(self) -> str:
        return f"{self.name}.nmconnection"

    @property
    def matched_by_mac(self) -> bool:
        """Ethernet profiles follow the NIC; virtual devices are named by their config."""
        return self.kind is Kind.ETHERNET and self.mac is not None


@dataclass(frozen=True)
class Skipped:
    """Something in a host file that is not carried, and why."""

    what: str  # an interface name, or the file when no interface could be named
    source: str  # the file as it is on the host
    reason: str

    def line(self) -> str:
        where = "" if self.what == self.source else f" in {self.source}"
        return shown(f"network: {self.what}{where}: {self.reason}")


def shown(text: str) -> str:
    """Text safe to print and to put in JSON: undecodable bytes of file names as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def name(value: str, what: str = "interface name") -> str:
    if not NAME_RE.fullmatch(value):
        raise HostFileError(f"{what} {value!r} is not a valid interface name")
    return value


def mac(value: str, what: str = "MAC address") -> str:
    text = value.strip().lower()
    if not MAC_RE.fullmatch(text):
        raise HostFileError(f"{what} {value!r} is not a MAC address")
    return text


def ip(value: str, what: str) -> str:
    """A unicast host address (v4 or v6), normalised."""
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise HostFileError(f"{what} {value!r} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        raise HostFileError(f"{what} {value!r} is not a usable host address")
    return str(addr)


def prefix_len(mask: str, version: int, what: str) -> int:
    """A prefix length from `24` or a dotted netmask (which must be contiguous)."""
    text = mask.strip()
    limit = 32 if version == 4 else 128
    if re.fullmatch(r"[0-9]{1,3}", text) and int(text) <= limit:
        return int(text)
    if version == 4:
        try:
            return ipaddress.ip_network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            pass
    raise HostFileError(f"{what} {mask!r} is not a netmask or prefix length")


def cidr(
    addr: str, mask: Optional[str] = None, what: str = "address", mask_what: str = "netmask"
) -> str:
    """`addr/prefix` from `addr/prefix`, `addr` + netmask, or a bare address (host prefix)."""
    host, slash, plen = addr.strip().partition("/")
    if slash and mask:
        raise HostFileError(f"{what} {addr!r} has a prefix and a netmask")
    version = ipaddress.ip_address(ip(host, what)).version
    given = plen if slash else mask
    where = what if slash else mask_what
    length = prefix_len(given, version, where) if given else (32 if version == 4 else 128)
    return f"{ip(host, what)}/{length}"


def gateway(value: str, what: str = "gateway") -> str:
    return ip(value.split("%", 1)[0], what)


def dns(values: Iterable[str], what: str = "DNS server") -> Tuple[str, ...]:
    return tuple(ip(v, what) for v in values)


def domains(values: Iterable[str]) -> Tuple[str, ...]:
    out = []
    for v in values:
        if not DOMAIN_RE.fullmatch(v):
            raise HostFileError(f"search domain {v!r} is not a domain name")
        out.append(v)
    return tuple(out)


def route(dest: str, via: str) -> Tuple[str, str]:
    try:
        net = ipaddress.ip_network(dest.strip(), strict=False)
    except ValueError:
        raise HostFileError(f"route destination {dest!r} is not a network") from None
    hop = gateway(via, "route gateway")
    if ipaddress.ip_address(hop).version != net.version:
        raise HostFileError(f"route {dest} via {via}: mixes IPv4 and IPv6")
    return str(net), hop


def option(key: str, value: str, known: Iterable[str], what: str) -> Tuple[str, str]:
    if key not in known:
        raise HostFileError(f"{what} option {key!r} is not one NetworkManager knows")
    if not OPTION_RE.fullmatch(value):
        raise HostFileError(f"{what} option {key}={value!r} is not a valid value")
    return key, value


def default_gateway(
    via: str, gw4: Optional[str], gw6: Optional[str]
) -> Tuple[Optional[str], Optional[str]]:
    """(gateway4, gateway6) after a `default via` route, whichever family it is."""
    hop = gateway(via, "default route gateway")
    if ipaddress.ip_address(hop).version == 4:
        return hop, gw6
    return gw4, hop


def family(values: Iterable[str], version: int) -> List[str]:
    """The addresses/networks of one IP version (values already validated)."""
    return [v for v in values if ipaddress.ip_interface(v).version == version]


def sys_mac(root: Path, iface: str) -> Optional[str]:
    """A NIC's own MAC from sysfs, or None. A bond port shows the bond's MAC as `address`;
    its own is `bonding_slave/perm_hwaddr`, and that is the one NestOS will see."""
    if not NAME_RE.fullmatch(iface):
        return None
    for rel in ("bonding_slave/perm_hwaddr", "address"):
        try:
            text = (root / "sys/class/net" / iface / rel).read_text(errors="replace").strip()
        except OSError:
            continue
        if MAC_RE.fullmatch(text.lower()):
            return text.lower()
    return None


def iface_of_mac(root: Path, want: str) -> Optional[str]:
    d = root / "sys/class/net"
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if sys_mac(root, p.name) == want.lower():
            return p.name
    return None
