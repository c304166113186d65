"""Network carry: ifupdown, NetworkManager, ifcfg and netplan trees become NM keyfiles."""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Dict, Optional

import pytest

from fixtures.hostfacts.hosttree import build_host, write_runtime
from helpers.capabilities import require
from helpers.nmcli import ini as nm_ini
from helpers.nmcli import nmcli_offline, normalise
from x2nestos import netstate, network
from x2nestos.network import NetworkMode
from x2nestos.preflight import Status


def _ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


def test_ifupdown(tmp_path: Path) -> None:
    build_host(tmp_path, network="ifupdown")
    facts = network.read_network(tmp_path)
    assert sorted(facts.keyfiles) == [
        f"{n}.nmconnection" for n in ("bond0", "ens3", "ens4", "ens5", "ens6")
    ]
    ens3 = _ini(facts.keyfiles["ens3.nmconnection"])
    assert ens3["ethernet"]["mac-address"] == "52:54:00:12:34:56"
    assert ens3["ipv4"]["method"] == "manual"
    assert ens3["ipv4"]["address1"] == "192.0.2.10/24,192.0.2.1"
    assert ens3["ipv4"]["route1"] == "198.51.100.0/24,192.0.2.254"
    assert ens3["ipv4"]["dns"] == "192.0.2.53;"
    assert ens3["ipv6"]["address1"] == "2001:db8::10/64,2001:db8::1"
    assert ens3["ipv6"]["dns"] == "2001:db8::53;"
    ens4 = _ini(facts.keyfiles["ens4.nmconnection"])
    assert ens4["ipv4"]["method"] == "auto"
    bond = _ini(facts.keyfiles["bond0.nmconnection"])  # bond-slaves ens5 ens6, no mode
    assert bond["connection"]["type"] == "bond" and bond["bond"]["mode"] == "balance-rr"
    for port in ("ens5", "ens6"):
        k = _ini(facts.keyfiles[f"{port}.nmconnection"])
        assert k["connection"]["master"] == "bond0" and k["connection"]["slave-type"] == "bond"
        assert "ipv4" not in k
    assert "/etc/network/interfaces.d/extra" in facts.sources


def test_networkmanager_verbatim_and_wifi_listed(tmp_path: Path) -> None:
    build_host(tmp_path, network="nm")
    facts = network.read_network(tmp_path)
    assert list(facts.keyfiles) == ["Wired connection 1.nmconnection"]
    src = tmp_path / "etc/NetworkManager/system-connections/Wired connection 1.nmconnection"
    assert facts.keyfiles["Wired connection 1.nmconnection"] == src.read_text()
    assert any("home.nmconnection" in n and "wifi" in n for n in facts.not_carried)


def test_ifcfg(tmp_path: Path) -> None:
    build_host(tmp_path, network="ifcfg")
    facts = network.read_network(tmp_path)
    eth0 = _ini(facts.keyfiles["eth0.nmconnection"])
    assert eth0["ethernet"]["mac-address"] == "52:54:00:AA:BB:CC"
    assert eth0["ipv4"]["address1"] == "10.1.2.3/16,10.1.0.1"
    assert eth0["ipv4"]["dns"] == "10.1.0.53;"
    assert eth0["ipv6"]["method"] == "ignore"


def test_netplan_with_yaml(tmp_path: Path) -> None:
    build_host(tmp_path, network="netplan")
    facts = network.read_network(tmp_path)
    k = _ini(facts.keyfiles["enp0s3.nmconnection"])
    assert k["ethernet"]["mac-address"] == "52:54:00:11:22:33"
    assert k["ipv4"]["address1"] == "172.16.5.20/24,172.16.5.1"
    assert k["ipv4"]["dns"] == "172.16.5.53;"
    port = _ini(facts.keyfiles["enp0s8.nmconnection"])  # listed by bond0 only
    assert port["connection"]["master"] == "bond0"
    assert _ini(facts.keyfiles["bond0.nmconnection"])["connection"]["type"] == "bond"


def test_interface_without_mac_is_reported(tmp_path: Path) -> None:
    build_host(tmp_path, network="none")
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(
        "auto eth9\niface eth9 inet static\n  address 10.9.9.9/24\n"
    )
    facts = network.read_network(tmp_path)
    k = _ini(facts.keyfiles["eth9.nmconnection"])
    assert k["connection"]["interface-name"] == "eth9"
    assert k["ipv4"]["dns"] == "192.0.2.53;"  # from resolv.conf, loopback stub skipped
    assert any("eth9 has no known MAC" in n for n in facts.not_carried)


def test_systemd_networkd(tmp_path: Path) -> None:
    build_host(tmp_path, network="networkd")
    facts = network.read_network(tmp_path)
    k = _ini(facts.keyfiles["ens3.nmconnection"])  # named after the NIC that has the MAC
    assert k["ethernet"]["mac-address"] == "52:54:00:12:34:56"
    assert k["ipv4"]["address1"] == "198.51.100.20/24,198.51.100.1"
    assert k["ipv6"]["address1"] == "2001:db8:5::20/64"
    assert k["ipv4"]["dns"] == "198.51.100.53;" and k["ipv6"]["dns"] == "2001:db8:5::53;"
    assert k["ipv4"]["dns-search"] == "corp.test;"
    assert any("99-all.network" in n and "wildcard" in n for n in facts.not_carried)


def _tree(root: Path, files: Dict[str, str], runtime: Optional[tuple] = None) -> Path:
    """A host with no network config of the fixture's own, plus `files` (and runtime state)."""
    build_host(root, network="none")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if runtime is not None:
        write_runtime(root, *runtime)
    return root


IFCFG = "etc/sysconfig/network-scripts/ifcfg-"


def test_ifcfg_vlan_bond_bridge_and_global_gateway(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            IFCFG + "eth0": "DEVICE=eth0\nHWADDR=52:54:00:aa:bb:cc\nIPADDR=10.1.2.3\nPREFIX=16\n",
            "etc/sysconfig/network": "NETWORKING=yes\nGATEWAY=10.1.0.1\n",
            IFCFG + "eth0.100": "VLAN=yes\nDEVICE=eth0.100\nIPADDR=10.100.0.5\n"
            "NETMASK=255.255.255.0\n",
            IFCFG + "vlan200": "VLAN=yes\nDEVICE=vlan200\nPHYSDEV=eth0\nBOOTPROTO=dhcp\n",
            IFCFG + "bond0": 'DEVICE=bond0\nTYPE=Bond\nBONDING_MASTER=yes\nBONDING_OPTS="mode='
            '802.3ad miimon=100"\nIPADDR=192.168.50.2\nPREFIX=24\n',
            IFCFG + "ens3": "DEVICE=ens3\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\n",
            IFCFG + "br0": "DEVICE=br0\nTYPE=Bridge\nSTP=off\nDELAY=0\nBOOTPROTO=dhcp\n",
            IFCFG + "ens4": "DEVICE=ens4\nBRIDGE=br0\n",
            IFCFG + "team0": "DEVICE=team0\nTYPE=Team\n",
        },
    )
    facts = network.read_network(tmp_path)
    eth0 = _ini(facts.keyfiles["eth0.nmconnection"])
    assert eth0["ipv4"]["address1"] == "10.1.2.3/16,10.1.0.1"  # the global GATEWAY
    vlan = _ini(facts.keyfiles["eth0.100.nmconnection"])
    assert vlan["connection"]["type"] == "vlan"
    assert vlan["connection"]["interface-name"] == "eth0.100"
    assert dict(vlan["vlan"]) == {"id": "100", "parent": "eth0"}
    assert "ethernet" not in vlan  # never bound to the parent's MAC
    assert vlan["ipv4"]["address1"] == "10.100.0.5/24"
    v200 = _ini(facts.keyfiles["vlan200.nmconnection"])
    assert v200["vlan"]["id"] == "200" and v200["ipv4"]["method"] == "auto"
    bond = _ini(facts.keyfiles["bond0.nmconnection"])
    assert dict(bond["bond"]) == {"mode": "802.3ad", "miimon": "100"}
    assert bond["ipv4"]["address1"] == "192.168.50.2/24"
    port = _ini(facts.keyfiles["ens3.nmconnection"])
    assert port["connection"]["master"] == "bond0" and port["connection"]["slave-type"] == "bond"
    assert port["ethernet"]["mac-address"] == "52:54:00:12:34:56" and "ipv4" not in port
    br = _ini(facts.keyfiles["br0.nmconnection"])
    assert dict(br["bridge"]) == {"stp": "false", "forward-delay": "0"}
    assert _ini(facts.keyfiles["ens4.nmconnection"])["connection"]["slave-type"] == "bridge"
    assert any("team0" in n and "type Team is not carried" in n for n in facts.not_carried)
    assert "team0.nmconnection" not in facts.keyfiles


def test_global_gateway_that_fits_no_interface_is_listed(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            IFCFG + "eth0": "DEVICE=eth0\nIPADDR=10.1.2.3\nPREFIX=24\n",
            "etc/sysconfig/network": "GATEWAY=172.16.0.1\n",
        },
    )
    facts = network.read_network(tmp_path)
    assert "," not in _ini(facts.keyfiles["eth0.nmconnection"])["ipv4"]["address1"]
    assert "network: /etc/sysconfig/network: GATEWAY=172.16.0.1 fits no static interface" in (
        facts.not_carried
    )
    _tree(
        tmp_path / "dev",
        {
            IFCFG + "eth0": "DEVICE=eth0\nIPADDR=10.1.2.3\nPREFIX=24\n",
            "etc/sysconfig/network": "GATEWAY=172.16.0.1\nGATEWAYDEV=eth0\n",
        },
    )
    facts = network.read_network(tmp_path / "dev")  # GATEWAYDEV: on-link, as named
    assert _ini(facts.keyfiles["eth0.nmconnection"])["ipv4"]["address1"].endswith(",172.16.0.1")


NETPLAN_BONDS = """\
network:
  version: 2
  ethernets:
    eno1: {match: {macaddress: "52:54:00:12:34:56"}}
    eno2: {match: {macaddress: "52:54:00:12:34:57"}}
  bonds:
    bond0:
      interfaces: [eno1, eno2]
      parameters: {mode: active-backup, mii-monitor-interval: 100, primary: eno1}
      addresses: [10.5.0.2/24]
      routes: [{to: default, via: 10.5.0.1}]
      nameservers: {addresses: [10.5.0.53], search: [lab.test]}
  bridges:
    br0:
      interfaces: [eno3]
      parameters: {stp: false, forward-delay: 4}
      dhcp4: true
  vlans:
    vlan10: {id: 10, link: bond0, addresses: ["10.10.0.2/24"]}
"""


def test_netplan_bonds_bridges_vlans(tmp_path: Path) -> None:
    _tree(tmp_path, {"etc/netplan/50-lab.yaml": NETPLAN_BONDS})
    facts = network.read_network(tmp_path)
    bond = _ini(facts.keyfiles["bond0.nmconnection"])
    assert dict(bond["bond"]) == {"mode": "active-backup", "miimon": "100", "primary": "eno1"}
    assert bond["ipv4"]["address1"] == "10.5.0.2/24,10.5.0.1"
    assert bond["ipv4"]["dns"] == "10.5.0.53;" and bond["ipv4"]["dns-search"] == "lab.test;"
    for name, mac in (("eno1", "52:54:00:12:34:56"), ("eno2", "52:54:00:12:34:57")):
        port = _ini(facts.keyfiles[f"{name}.nmconnection"])
        assert port["ethernet"]["mac-address"] == mac.upper()
        assert port["connection"]["master"] == "bond0" and "ipv4" not in port
    br = _ini(facts.keyfiles["br0.nmconnection"])
    assert dict(br["bridge"]) == {"stp": "false", "forward-delay": "4"}
    assert _ini(facts.keyfiles["eno3.nmconnection"])["connection"]["master"] == "br0"
    vlan = _ini(facts.keyfiles["vlan10.nmconnection"])
    assert dict(vlan["vlan"]) == {"id": "10", "parent": "bond0"}


def test_ifupdown_bridge_and_vlans(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "etc/network/interfaces": "auto br0\niface br0 inet static\n  address 10.7.0.2/24\n"
            "  gateway 10.7.0.1\n  bridge_ports ens3\n  bridge_stp off\n  bridge_fd 0\n\n"
            "auto ens4.30\niface ens4.30 inet static\n  address 10.30.0.2/24\n\n"
            "auto vlan40\niface vlan40 inet dhcp\n  vlan-raw-device ens4\n"
        },
    )
    facts = network.read_network(tmp_path)
    br = _ini(facts.keyfiles["br0.nmconnection"])
    assert dict(br["bridge"]) == {"forward-delay": "0", "stp": "false"}
    assert br["ipv4"]["address1"] == "10.7.0.2/24,10.7.0.1"
    port = _ini(facts.keyfiles["ens3.nmconnection"])
    assert port["connection"]["slave-type"] == "bridge"
    assert port["ethernet"]["mac-address"] == "52:54:00:12:34:56"
    assert dict(_ini(facts.keyfiles["ens4.30.nmconnection"])["vlan"]) == {
        "id": "30",
        "parent": "ens4",
    }
    assert dict(_ini(facts.keyfiles["vlan40.nmconnection"])["vlan"]) == {
        "id": "40",
        "parent": "ens4",
    }


DEFAULT_ETH0 = ([("eth0", "52:54:00:aa:bb:cc", [("10.0.0.5/24", False)])], ("eth0", "10.0.0.1"))


@pytest.mark.parametrize(
    "rel,data,reason",
    [
        (IFCFG + "eth0", b"DEVICE=eth0\nIPADDR=999.1.1.1\n", "IPADDR '999.1.1.1' is not an IP"),
        (
            IFCFG + "eth0",
            b"DEVICE=eth0\nIPADDR=10.0.0.5\nNETMASK=255.0.255.0\n",
            "NETMASK '255.0.255.0' is not a netmask",
        ),
        (IFCFG + "eth0", b"DEVICE=eth0\nHWADDR=nope\n", "HWADDR 'nope' is not a MAC"),
        (
            "etc/netplan/1.yaml",
            b"network:\n  ethernets:\n    eth0:\n      addresses: [nope]\n",
            "address 'nope' is not an IP address",
        ),
        (
            "etc/netplan/1.yaml",
            b"network:\n  ethernets:\n    eth0:\n      routes: [{to: default, via: nope}]\n",
            "default route gateway 'nope'",
        ),
        ("etc/netplan/1.yaml", b"network: [1]\n", "network is not a mapping"),
        ("etc/netplan/1.yaml", b"network:\n  ethernets: [a]\n", "ethernets is not a mapping"),
        ("etc/netplan/1.yaml", b"network:\n  ethernets:\n    eth0: hello\n", "not a mapping"),
        ("etc/netplan/1.yaml", b"network:\n  ethernets: {\xff}\n", "not UTF-8"),
        ("etc/netplan/1.yaml", b"[" * 100000, "not valid YAML"),
        (
            "etc/systemd/network/1.network",
            b"[Match]\nName=eth0\n[Network]\nGateway=nope\n",
            "gateway 'nope' is not an IP",
        ),
        (
            "etc/network/interfaces",
            b"auto eth0\niface eth0 inet static\n  address nope\n",
            "address 'nope' is not an IP",
        ),
        (IFCFG + "eth0/x", b"", "ifcfg-eth0: not a regular file"),
        (
            "etc/NetworkManager/system-connections/eth0.nmconnection/x",
            b"",
            "eth0.nmconnection: not a regular file",
        ),
        (
            "etc/NetworkManager/system-connections/eth0.nmconnection",
            b"[connection]\ntype=ethernet\ninterface-name=eth0\n[ipv4]\naddress1=10.0.0.500/24\n",
            "[ipv4] address1 '10.0.0.500' is not an IP",
        ),
        (
            "etc/NetworkManager/system-connections/eth0.nmconnection",
            b"no section\n",
            "not a keyfile",
        ),
    ],
)
def test_hostile_host_file_is_not_carried(
    tmp_path: Path, rel: str, data: bytes, reason: str
) -> None:
    """issue 19: one typo or odd file never stops x2nestos; it is listed with file and reason.
    A file that configures eth0 then keeps eth0 from being carried, and the default route's
    interface blocks the plan (unless --network dhcp); a file that cannot be tied to any
    interface leaves eth0 to its runtime state, which is carried."""
    _tree(tmp_path, {}, DEFAULT_ETH0)
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(data)
    runtime = netstate.read_runtime(tmp_path)
    facts = network.read_network(tmp_path, runtime)
    lines = [n for n in facts.not_carried if reason in n]
    assert lines, facts.not_carried
    assert "/" + rel.split("/x")[0].rsplit("/", 1)[0] in lines[0]
    check = network.check(facts, runtime, mode=NetworkMode.CARRY, carried=True)
    if lines[0].startswith("network: eth0 in /"):
        assert "eth0.nmconnection" not in facts.keyfiles
        assert check.status is Status.FAIL and "eth0 is not carried" in check.detail
        assert {"eth0": "not carried"} == {p.name: p.becomes for p in facts.interfaces}
    else:
        assert facts.plan_of("eth0", None).source == network.RUNTIME_SOURCE  # type: ignore[union-attr]
        assert check.status is Status.OK
    dhcp = network.check(facts, runtime, mode=NetworkMode.DHCP, carried=True)
    assert dhcp.status is Status.OK


def test_runtime_only_addresses(tmp_path: Path) -> None:
    """An address with no config file: static ones are carried (gateway from the default route,
    DNS from resolv.conf), DHCP leases become DHCP, runtime-only devices are listed."""
    docker = {
        "ifname": "docker0",
        "link_type": "ether",
        "address": "02:42:ac:11:00:01",
        "linkinfo": {"info_kind": "bridge"},
        "addr_info": [
            {"family": "inet", "local": "172.17.0.1", "prefixlen": 16, "scope": "global"}
        ],
    }
    _tree(
        tmp_path,
        {"etc/network/interfaces": "auto ens4\niface ens4 inet static\n  address 10.4.0.2/24\n"},
        (
            [
                ("ens3", "52:54:00:12:34:56", [("10.0.9.9/24", False), ("fe80::1/64", False)]),
                ("ens4", "52:54:00:12:34:57", [("10.4.0.2/24", False), ("10.4.0.99/24", False)]),
                ("ens5", "52:54:00:12:34:58", [("10.0.5.7/24", True)]),
            ],
            ("ens3", "10.0.9.1"),
        ),
    )
    wr = tmp_path / "run/x2nestos/ip-addr.json"
    wr.write_text(json.dumps(json.loads(wr.read_text()) + [docker]))
    runtime = netstate.read_runtime(tmp_path)
    facts = network.read_network(tmp_path, runtime)
    ens3 = _ini(facts.keyfiles["ens3.nmconnection"])
    assert ens3["ethernet"]["mac-address"] == "52:54:00:12:34:56"
    assert ens3["ipv4"]["address1"] == "10.0.9.9/24,10.0.9.1"  # link-local left out
    assert ens3["ipv4"]["dns"] == "192.0.2.53;"
    assert _ini(facts.keyfiles["ens5.nmconnection"])["ipv4"]["method"] == "auto"
    assert (
        "network: 10.4.0.99/24 on ens4 exists only at runtime (not in /etc/network/interfaces)"
        in (facts.not_carried)
    )
    assert any(n.startswith("network: docker0 in runtime state") for n in facts.not_carried)
    plans = {p.name: p for p in facts.interfaces}
    assert plans["ens3"].becomes == "static" and plans["ens3"].source == network.RUNTIME_SOURCE
    assert plans["ens5"].becomes == "dhcp" and plans["docker0"].becomes == "not carried"
    check = network.check(facts, runtime, mode=NetworkMode.CARRY, carried=True)
    assert check.status is Status.OK and check.detail == "carried: ens3: static"


def test_default_route_and_must_carry_checks(tmp_path: Path) -> None:
    build_host(tmp_path, network="ifupdown")
    runtime = netstate.read_runtime(tmp_path)
    facts = network.read_network(tmp_path, runtime)
    ok = network.check(facts, runtime, mode=NetworkMode.CARRY, carried=True)
    assert ok.status is Status.OK
    off = network.check(network.NetworkFacts(), runtime, mode=NetworkMode.CARRY, carried=False)
    assert off.status is Status.FAIL and "network is not in --carry" in off.detail
    ssh = network.check(facts, runtime, mode=NetworkMode.CARRY, carried=True, must_carry=["ens9"])
    assert ssh.status is Status.FAIL and "ens9 is not carried" in ssh.detail
    gone = network.check(facts, None, mode=NetworkMode.CARRY, carried=True)
    assert gone.status is Status.WARN and "not checked" in gone.detail
    (tmp_path / "run/x2nestos/ip-addr.json").write_text("[" * 100000)
    bad = netstate.read_runtime(tmp_path)
    assert not bad.known and "not JSON" in bad.problems[0]
    warn = network.check(facts, bad, mode=NetworkMode.CARRY, carried=True)
    assert warn.status is Status.WARN and "ip-addr.json: not JSON" in warn.detail


def test_gateway_lost_is_a_warning(tmp_path: Path) -> None:
    _tree(tmp_path, {IFCFG + "eth0": "DEVICE=eth0\nIPADDR=10.0.0.5\nPREFIX=24\n"}, DEFAULT_ETH0)
    runtime = netstate.read_runtime(tmp_path)
    check = network.check(
        network.read_network(tmp_path, runtime), runtime, mode=NetworkMode.CARRY, carried=True
    )
    assert check.status is Status.WARN and "without the default gateway" in check.detail


@pytest.mark.parametrize(
    "text",
    ["", "{}", "[1]", '[{"ifname": 5}]', '[{"ifname": "x", "addr_info": "no"}]', "\x00", "nope"],
)
def test_ip_json_shapes(text: str) -> None:
    state = netstate.parse_runtime({"ip-addr.json": text, "ip-route.json": text}, "/run/x2nestos")
    assert isinstance(state.links, tuple) and isinstance(state.routes, tuple)


def _generated(tmp_path: Path) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for flavour in ("ifupdown", "ifcfg", "netplan", "networkd"):
        build_host(tmp_path / flavour, network=flavour)
        out.update(network.read_network(tmp_path / flavour).keyfiles)
    test_ifcfg_vlan_bond_bridge_and_global_gateway(tmp_path / "vlan")
    out.update(network.read_network(tmp_path / "vlan").keyfiles)
    _tree(tmp_path / "np", {"etc/netplan/50-lab.yaml": NETPLAN_BONDS})
    out.update({"np-" + k: v for k, v in network.read_network(tmp_path / "np").keyfiles.items()})
    return out


def test_keyfiles_read_back_by_networkmanager(tmp_path: Path) -> None:
    """NetworkManager's own reader (nmcli --offline) takes every keyfile we write and keeps
    every key of it (it drops keys it does not know, e.g. controller= before NM 1.46)."""
    require(nmcli_offline() is not None, "needs nmcli with --offline (Debian: network-manager)")
    for name, text in _generated(tmp_path).items():
        proc = normalise(text)
        assert proc.returncode == 0, (name, text, proc.stderr)
        back = nm_ini(proc.stdout)
        for section, keys in nm_ini(text).items():
            for key, value in keys.items():
                if (section, key, value) == ("connection", "autoconnect", "true"):
                    continue  # NetworkManager's default, not written back
                assert back.get(section, {}).get(key) == value, (name, section, key, proc.stdout)


def test_bond_ports_bound_to_their_own_mac(tmp_path: Path) -> None:
    """A bond port shows the bond's MAC in sysfs; NestOS sees the port's permanent one."""
    _tree(
        tmp_path,
        {
            IFCFG + "bond0": "DEVICE=bond0\nTYPE=Bond\nBONDING_OPTS=mode=active-backup\n",
            IFCFG + "ens4": "DEVICE=ens4\nMASTER=bond0\nSLAVE=yes\n",
            "sys/class/net/ens4/address": "52:54:00:12:34:56\n",  # the bond's (= ens3's)
            "sys/class/net/ens4/bonding_slave/perm_hwaddr": "52:54:00:12:34:57\n",
        },
    )
    port = _ini(network.read_network(tmp_path).keyfiles["ens4.nmconnection"])
    assert port["ethernet"]["mac-address"] == "52:54:00:12:34:57"


def test_netplan_match_forms(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "etc/netplan/1.yaml": "network:\n  ethernets:\n"
            "    lan: {match: {name: ens3}, set-name: ens3, dhcp4: true}\n"
            "    nics: {match: {name: 'en*'}, dhcp4: true}\n"
            "    fast: {match: {driver: ixgbe}, dhcp4: true}\n"
        },
    )
    facts = network.read_network(tmp_path)
    assert _ini(facts.keyfiles["lan.nmconnection"])["ethernet"]["mac-address"] == (
        "52:54:00:12:34:56"
    )
    assert "network: nics in /etc/netplan/1.yaml: match by name pattern 'en*' is not carried" in (
        facts.not_carried
    )
    assert "network: fast in /etc/netplan/1.yaml: match by driver is not carried" in (
        facts.not_carried
    )
