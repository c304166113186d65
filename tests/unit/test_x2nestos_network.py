"""Network carry: ifupdown, NetworkManager, ifcfg and netplan trees become NM keyfiles."""

from __future__ import annotations

import configparser
from pathlib import Path

from fixtures.hostfacts.hosttree import build_host
from x2nestos import network


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
