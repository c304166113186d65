"""The nestos.x2nestos collection, built and installed with ansible-galaxy into a temp dir, run
by ansible-playbook against fake hosts (fixtures/ansible/x2nestos_standin.py speaks x2nestos's
JSON interface): a canary first, the failure budget, results per host, a summary, resume, the
refusal of a host changed by a failed conversion, check mode, vaulted Ignition; ansible-lint.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from helpers.ansible import ansible_env, ansible_tool, build_collection, playbook
from helpers.tools import REPO

STANDIN = REPO / "tests/fixtures/ansible/x2nestos_standin.py"
DEBIAN = "Debian GNU/Linux 12 (bookworm)"
TEMPLATE = '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/motd", '
TEMPLATE += '"contents": {"source": "data:,{{ inventory_hostname }}"}}]}}'
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ansible"), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection built by ansible-galaxy and installed into a temp collections path."""
    return build_collection(tmp_path_factory.mktemp("collection"))


class Fleet:
    """Fake hosts (one JSON file per SSH port), an inventory, and ansible-playbook runs."""

    def __init__(self, tmp: Path, collections: Path, hosts: Dict[str, Dict[str, Any]]) -> None:
        self.dir = tmp
        self.env = ansible_env(tmp, collections)
        self.env["X2N_FLEET"] = str(tmp)
        self.ports = {name: 2201 + i for i, name in enumerate(hosts)}
        lines = ["[fleet]"]
        for name, spec in hosts.items():
            host = {"hostname": name, "os": DEBIAN, "kexec": True}
            host.update(spec)
            (tmp / f"{self.ports[name]}.json").write_text(json.dumps(host))
            lines.append(f"{name} ansible_host=127.0.0.1 ansible_port={self.ports[name]}")
        (tmp / "fleet.ini").write_text("\n".join(lines) + "\n")
        (tmp / "pxe").mkdir()
        (tmp / "ign.j2").write_text(TEMPLATE)
        self.vars = {
            "convert_x2nestos": str(STANDIN),
            "convert_pxe": str(tmp / "pxe"),
            "convert_ignition_template": str(tmp / "ign.j2"),
            "convert_results_dir": str(tmp / "results"),
            "convert_ssh_options": [f"UserKnownHostsFile={tmp / 'known_hosts'}"],
        }

    def play(self, *args: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        return playbook(self.env, self.dir / "fleet.ini", {**self.vars, **extra}, *args)

    def result(self, host: str) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads((self.dir / "results" / f"{host}.json").read_text())
        return data

    def summary(self, name: str = "summary") -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads((self.dir / "results" / f"{name}.json").read_text())
        return data

    def calls(self, command: str = "convert") -> List[Dict[str, Any]]:
        lines = (self.dir / "calls.jsonl").read_text().splitlines()
        return [c for c in map(json.loads, lines) if c["argv"][0] == command]

    def converted_ports(self) -> List[str]:
        return [c["argv"][c["argv"].index("--port") + 1] for c in self.calls()]

    def host(self, name: str) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads((self.dir / f"{self.ports[name]}.json").read_text())
        return data


def test_canary_budget_then_resume(collections: Path, tmp_path: Path) -> None:
    """Default batches [1, 10%, 25%]: a converted, b blocked (no kexec) stops the run with c
    not reached; the next run with convert_install_kexec skips a and converts b and c."""
    fleet = Fleet(tmp_path, collections, {"a": {}, "b": {"kexec": False}, "c": {}})
    first = fleet.play()
    assert first.returncode == 2, first.stdout[-3000:]
    assert fleet.converted_ports() == ["2201"]  # b stopped at the doctor, c never reached
    a, b = fleet.result("a"), fleet.result("b")
    assert (a["outcome"], a["state"], a["untouched"]) == ("converted", "verified", False)
    assert [p["phase"] for p in a["phases"]][-1] == "verified"
    assert all({"start", "end", "seconds", "status"} <= set(p) for p in a["phases"])
    assert (b["outcome"], b["failed-phase"], b["untouched"]) == ("failed", "plan", True)
    assert b["reason"] == "kexec: kexec not found; install it"
    assert not (tmp_path / "results/c.json").exists()
    summary = fleet.summary()
    assert summary["counts"] == {"converted": 1, "failed": 1, "not-reached": 1}
    assert summary["hosts"]["failed"] == [
        {"host": "b", "why": "plan: kexec: kexec not found; install it (untouched)"}
    ]
    assert "b: failed in phase plan: kexec: kexec not found; install it" in first.stdout
    # the Ignition config: rendered for the host, given on stdin, never in a file or the log
    for call in fleet.calls():
        assert call["argv"][call["argv"].index("--ignition-file") + 1] == "-"
        assert call["ignition-from"] == "stdin"
    call = fleet.calls()[0]
    assert call["ignition"]["storage"]["files"][0]["contents"]["source"] == "data:,a"
    assert "data:,a" not in first.stdout + first.stderr

    second = fleet.play(convert_install_kexec=True)
    assert second.returncode == 0, second.stdout[-3000:]
    assert fleet.converted_ports() == ["2201", "2202", "2203"]  # a not converted again
    assert "--install-kexec" in fleet.calls()[1]["argv"]
    skipped = fleet.result("a")
    assert skipped["outcome"] == "skipped" and skipped["conversion"]["outcome"] == "converted"
    assert skipped["reason"].startswith(f"already runs {fleet.host('a')['os']} as a")
    assert fleet.result("b")["outcome"] == fleet.result("c")["outcome"] == "converted"
    assert fleet.summary()["counts"] == {"converted": 2, "skipped": 1}


def test_failure_after_the_jump_is_refused(collections: Path, tmp_path: Path) -> None:
    """A host that failed after the jump is reported, never retried blindly: the next run
    refuses it (its record kept) until convert_retry_touched; a vaulted Ignition file."""
    fleet = Fleet(tmp_path, collections, {"d": {"fail": {"phase": "live", "reason": "no"}}})
    (tmp_path / "vault-pass").write_text("s3cret\n")
    (tmp_path / "secret.ign").write_text('{"ignition": {"version": "3.3.0"}}')
    subprocess.run(
        [
            ansible_tool("ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(tmp_path / "vault-pass"),
        ]
        + [str(tmp_path / "secret.ign")],
        env=fleet.env,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "secret.ign").read_text().startswith("$ANSIBLE_VAULT")
    fleet.vars.update(
        convert_ignition_template="", convert_ignition_file=str(tmp_path / "secret.ign")
    )
    vault = ["--vault-password-file", str(tmp_path / "vault-pass")]
    first = fleet.play(*vault)
    assert first.returncode == 2
    record = fleet.result("d")
    assert (record["failed-phase"], record["untouched"], record["exit-code"]) == ("live", False, 15)
    assert fleet.calls()[0]["ignition"] == {"ignition": {"version": "3.3.0"}}  # decrypted
    assert "the host was CHANGED" in first.stdout

    second = fleet.play(*vault)
    assert second.returncode == 2 and len(fleet.calls()) == 1  # not converted again
    assert fleet.result("d") == record  # the record of the failure stays
    assert fleet.summary()["hosts"]["refused"][0]["why"].startswith("its conversion on")
    assert "remove" in second.stdout and "convert_retry_touched" in second.stdout

    third = fleet.play(*vault, convert_retry_touched=True)
    assert third.returncode == 2 and len(fleet.calls()) == 2  # tried again when asked


def test_check_mode_plans_only(collections: Path, tmp_path: Path) -> None:
    """--check: x2nestos plan per host, saved; no conversion, no record; a blocked host is
    reported, not failed; a host x2nestos cannot reach fails in `probe` and stops the run."""
    hosts = {"a": {}, "b": {"kexec": False}, "u": {"unreachable": True}}
    fleet = Fleet(tmp_path, collections, hosts)
    out = fleet.play("--check")
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert fleet.calls("convert") == [] and len(fleet.calls("plan")) == 1
    assert not list((tmp_path / "results").glob("?.json"))
    plan = json.loads((tmp_path / "results/a.plan.json").read_text())
    assert plan["target"]["stable-path"] == "/dev/disk/by-id/virtio-disk0"
    summary = fleet.summary("summary.check")
    assert summary["counts"] == {"failed": 1, "planned": 1, "blocked": 1}
    assert summary["hosts"]["blocked"][0]["why"] == "kexec: kexec not found; install it"
    assert summary["hosts"]["failed"][0] == {
        "host": "u",
        "why": "probe: ssh to root@127.0.0.1 port 2203: Connection refused (untouched)",
    }


def test_ansible_lint_clean(collections: Path, tmp_path: Path) -> None:
    """ansible-lint (production profile) over the collection as installed."""
    lint = ansible_tool("ansible-lint")
    installed = collections / "ansible_collections/nestos/x2nestos"
    out = subprocess.run(
        [lint, "--offline", "--nocolor", "--profile", "production"],
        cwd=installed,
        env=ansible_env(tmp_path, collections),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failure(s), 0 warning(s)" in out.stdout + out.stderr
