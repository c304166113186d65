"""x2nestos host readers on fake root trees: memory, consoles, kexec/lockdown/Secure Boot,
containers (mounts and disks: test_disks.py); and, property-based, every network and
identity host file with arbitrary bytes (a plan's reasons or a clean result, never a raise)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.hostfacts.hosttree import build_host
from x2nestos import hostfacts, identity, netstate, network
from x2nestos.netfiles import keyfile


@pytest.fixture
def host(tmp_path: Path) -> Path:
    build_host(tmp_path)
    return tmp_path


def test_basic_facts(host: Path) -> None:
    mem = hostfacts.meminfo(host)
    assert mem["MemTotal"] == 4 << 30
    assert mem["MemAvailable"] == 3 << 30
    assert mem["HugePages_Total"] == 0
    assert hostfacts.machine_arch(host) == "x86_64"
    assert hostfacts.kernel_release(host) == "6.1.0-test"
    assert hostfacts.consoles(hostfacts.read_cmdline(host)) == ["tty0", "ttyS0,115200n8"]
    assert hostfacts.systemd_is_pid1(host)
    assert hostfacts.container(host) is None
    assert hostfacts.hypervisor(host) == "qemu"


def test_kexec_plain(host: Path) -> None:
    k = hostfacts.kexec_facts(host)
    assert k.supported and not k.loaded and not k.load_disabled
    assert k.lockdown == "none" and k.secure_boot is False
    assert k.possible and not k.use_file_load


@pytest.mark.parametrize(
    "opts,file_load,possible",
    [
        ({"secure_boot": True}, True, True),
        ({"lockdown": "integrity"}, True, True),
        ({"lockdown": "confidentiality", "secure_boot": None}, True, True),
        ({"kexec_disabled": True}, False, False),
        ({"kexec_supported": False}, False, False),
    ],
)
def test_kexec_variants(tmp_path: Path, opts: dict, file_load: bool, possible: bool) -> None:
    build_host(tmp_path, **opts)
    k = hostfacts.kexec_facts(tmp_path)
    assert k.use_file_load is file_load
    assert k.possible is possible


def test_secure_boot_absent_on_bios(tmp_path: Path) -> None:
    build_host(tmp_path, secure_boot=None)
    assert hostfacts.secure_boot(tmp_path) is None


def test_container_detection(tmp_path: Path) -> None:
    build_host(tmp_path, container="docker")
    assert hostfacts.container(tmp_path) == "docker"
    other = tmp_path / "lxc"
    build_host(other, container="lxc")
    assert hostfacts.container(other) == "lxc"


# ---- property-based: arbitrary bytes in any host file never raise out of a reader (issue 19)

FUZZ = settings(
    max_examples=120,
    deadline=timedelta(milliseconds=2000),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
TOKENS = (
    "\n",
    " ",
    "=",
    "/",
    ".",
    ":",
    "[",
    "]",
    "{",
    "}",
    "-",
    '"',
    "#",
    ";",
    ",",
    "0",
    "1",
    "24",
    "10.0.0.1",
    "999.1.1.1",
    "fe80::1",
    "2001:db8::1/64",
    "52:54:00:aa:bb:cc",
    "255.255.0.255",
    "eth0",
    "eth0.100",
    "bond0",
    "br0",
    "\u00b2",
    "\udcff",
    "DEVICE",
    "IPADDR",
    "PREFIX",
    "NETMASK",
    "GATEWAY",
    "HWADDR",
    "TYPE",
    "Bond",
    "Bridge",
    "VLAN",
    "yes",
    "MASTER",
    "BRIDGE",
    "PHYSDEV",
    "BONDING_OPTS",
    "mode",
    "miimon",
    "DNS1",
    "[connection]",
    "[ipv4]",
    "[ethernet]",
    "[vlan]",
    "type",
    "id",
    "interface-name",
    "mac-address",
    "address1",
    "method",
    "manual",
    "master",
    "iface",
    "inet",
    "inet6",
    "static",
    "dhcp",
    "address",
    "gateway",
    "bond-slaves",
    "bridge_ports",
    "vlan-raw-device",
    "source",
    "auto",
    "[Match]",
    "[Network]",
    "Name",
    "Address",
    "Gateway",
    "DHCP",
    "network",
    "ethernets",
    "bonds",
    "bridges",
    "vlans",
    "addresses",
    "routes",
    "via",
    "to",
    "interfaces",
    "parameters",
    "link",
    "Include",
    "AuthorizedKeysFile",
    "HostKey",
    "ssh-ed25519",
    "AAAA",
    'command="x y"',
    "root",
    "x",
    "/bin/sh",
    "/home/a",
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.sampled_from(TOKENS))
YAML_DOCS = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(SCALARS, kids, max_size=4)
).map(lambda d: yaml.safe_dump(d).encode("utf-8", "surrogateescape"))
FILE_BYTES = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(TOKENS), max_size=80).map(
        lambda ts: "".join(ts).encode("utf-8", "surrogateescape")
    ),
    YAML_DOCS,
)
JSON_DOCS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(TOKENS)),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                (
                    "ifname",
                    "address",
                    "addr_info",
                    "family",
                    "local",
                    "prefixlen",
                    "dynamic",
                    "scope",
                    "linkinfo",
                    "info_kind",
                    "master",
                    "link_type",
                    "dst",
                    "gateway",
                    "dev",
                    "protocol",
                )
            ),  # fmt: skip
            kids,
            max_size=6,
        )
    ),
)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One host tree without network config; each example writes its file and removes it."""
    root = tmp_path_factory.mktemp("fuzzhost")
    build_host(root, network="none")
    return root


def _printable(lines: object) -> None:
    """What the plan prints and dumps as JSON must encode (no lone surrogates)."""
    json.dumps(lines, ensure_ascii=False).encode("utf-8")


def _network_survives(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        runtime = netstate.read_runtime(root)
        facts = network.read_network(root, runtime)
        network.check(facts, runtime, mode=network.NetworkMode.CARRY, carried=True)
    finally:
        path.unlink()
    for name, text in facts.keyfiles.items():
        if not name.startswith("host"):
            keyfile.parse(text, name)  # whatever we ship reads back
    _printable([facts.not_carried, facts.sources, [i.line() for i in facts.interfaces]])


@pytest.mark.parametrize(
    "rel",
    [
        "etc/sysconfig/network-scripts/ifcfg-eth0",
        "etc/sysconfig/network",
        "etc/NetworkManager/system-connections/host.nmconnection",
        "etc/netplan/01.yaml",
        "etc/systemd/network/10.network",
        "etc/network/interfaces",
        "etc/resolv.conf",
    ],
)
def test_network_files_never_raise(bare: Path, rel: str) -> None:
    @FUZZ
    @given(data=FILE_BYTES)
    def run(data: bytes) -> None:
        _network_survives(bare, rel, data)

    run()


def test_ip_json_never_raises(bare: Path) -> None:
    @FUZZ
    @given(addr=JSON_DOCS, route=JSON_DOCS, raw=st.binary(max_size=200))
    def run(addr: object, route: object, raw: bytes) -> None:
        texts = {"ip-addr.json": json.dumps(addr), "ip-route.json": json.dumps(route)}
        state = netstate.parse_runtime(texts, "/run/x2nestos")
        assert isinstance(state.default_devices(), list)
        netstate.parse_runtime({"ip-addr.json": raw.decode("utf-8", "replace")}, "ip")
        _network_survives(bare, "run/x2nestos/ip-addr.json", json.dumps(addr).encode())

    run()


@pytest.mark.parametrize(
    "rel",
    [
        "etc/passwd",
        "etc/group",
        "etc/login.defs",
        "etc/ssh/sshd_config",
        "root/.ssh/authorized_keys",
        "etc/hostname",
    ],  # fmt: skip
)
def test_identity_files_never_raise(bare: Path, rel: str) -> None:
    path = bare / rel
    saved = path.read_bytes() if path.exists() else None

    @FUZZ
    @given(data=FILE_BYTES)
    def run(data: bytes) -> None:
        path.write_bytes(data)
        ident = identity.read_identity(bare, users=True, host_keys=True, hostname=True)
        keys, _ = identity.parse_authorized_keys(data.decode("utf-8", "replace"))
        assert all(isinstance(k, str) for k in keys)
        _printable([ident.notes, ident.not_carried, [u.name for u in ident.users]])

    try:
        run()
    finally:
        if saved is not None:
            path.write_bytes(saved)
