"""Identity carry: login users' keys through sshd_config, host keys and hostname."""

from __future__ import annotations

import os
from pathlib import Path

from fixtures.hostfacts.hosttree import build_host
from x2nestos import identity


def test_users_keys_and_options(tmp_path: Path) -> None:
    tree = build_host(tmp_path)
    ident = identity.read_identity(tmp_path, users=True, host_keys=False, hostname=False)
    users = {u.name: u for u in ident.users}
    assert set(users) == {"root", "alice", "carol"}  # bob has nologin, daemon is a system uid
    assert users["alice"].keys == (tree.keys["alice"], tree.keys["alice2"])
    assert users["alice"].admin and not users["carol"].admin
    assert users["root"].keys == (tree.keys["root"],)
    assert any("removed options from 1 key(s) of alice" in n for n in ident.notes)
    assert any("Match blocks" in n for n in ident.notes)
    assert ident.host_keys == {} and ident.hostname is None


def test_parse_authorized_keys_quoted_options() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA x@y"
    text = f'command="a b \\"c\\"",no-pty {key}\nssh-rsa\n#c\n  \n{key}\n'
    keys, stripped = identity.parse_authorized_keys(text)
    assert keys == [key, key]
    assert stripped == 1


def test_host_keys_and_hostname(tmp_path: Path) -> None:
    build_host(tmp_path)
    ident = identity.read_identity(tmp_path, users=False, host_keys=True, hostname=True)
    priv = tmp_path / "etc/ssh/ssh_host_ed25519_key"
    assert ident.host_keys["/etc/ssh/ssh_host_ed25519_key"] == (priv.read_bytes(), 0o600)
    pub = ident.host_keys["/etc/ssh/ssh_host_ed25519_key.pub"]
    assert pub[1] == 0o644 and pub[0].startswith(b"ssh-ed25519 ")
    assert ident.hostname == "convertme"


def test_authorized_keys_command_listed(tmp_path: Path) -> None:
    build_host(tmp_path)
    cfg = tmp_path / "etc/ssh/sshd_config"
    cfg.write_text("AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys\n" + cfg.read_text())
    ident = identity.read_identity(tmp_path, users=True, host_keys=False, hostname=False)
    assert any("AuthorizedKeysCommand" in n for n in ident.not_carried)


def test_hostile_identity_files(tmp_path: Path) -> None:
    """issue 19: a UID of `²` (isdigit() but not int()), a FIFO authorized_keys, a directory
    sshd_config.d entry and an Include loop never stop the reader."""
    tree = build_host(tmp_path)
    passwd = tmp_path / "etc/passwd"
    passwd.write_text(passwd.read_text() + "zed:x:\u00b2:1:z:/home/zed:/bin/sh\n")
    os.mkfifo(tmp_path / "home/carol/.ssh/authorized_keys.fifo")
    (tmp_path / "home/carol/.ssh/authorized_keys").unlink()
    os.symlink("authorized_keys.fifo", tmp_path / "home/carol/.ssh/authorized_keys")
    (tmp_path / "etc/ssh/sshd_config.d/dir.conf").mkdir()
    (tmp_path / "etc/ssh/sshd_config.d/loop.conf").write_text("Include /etc/ssh/sshd_config\n")
    ident = identity.read_identity(tmp_path, users=True, host_keys=True, hostname=True)
    users = {u.name: u for u in ident.users}
    assert set(users) == {"root", "alice"}  # zed skipped, carol's keys unreadable
    assert users["alice"].keys == (tree.keys["alice"], tree.keys["alice2"])


def test_carried_admins_get_the_nestos_sudo_group(tmp_path: Path) -> None:
    from x2nestos.payload import DestSource, dest_ignition

    build_host(tmp_path)
    ident = identity.read_identity(tmp_path, users=True, host_keys=False, hostname=False)
    users = {u["name"]: u for u in dest_ignition(DestSource(), ident, {})["passwd"]["users"]}
    assert users["alice"]["groups"] == [identity.NESTOS_SUDO_GROUP] == ["wheel"]
    assert "groups" not in users["carol"] and "groups" not in users["root"]
