"""Markers, capability probes and the strict-CI switch shared by every test.

A test that needs a capability calls `require(...)` (or uses a fixture that does): it skips with a
reason where the capability is absent, and fails instead when NESTOS_TEST_STRICT=1 (CI).
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("NESTOS_TEST_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if STRICT and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"NESTOS_TEST_STRICT=1: this test would have skipped: {reason}"


# The longest boot proofs run first. xdist gives each worker the next tests in collection order
# and queues one more behind the running one: a long proof queued behind the fleet test near the
# end leaves the other worker idle for minutes (measured: 4 of a 30-minute run).
LONGEST_FIRST = (
    "tests/boot/test_fleet_ansible.py",
    "tests/boot/test_x2nestos_remote.py",
    "tests/boot/test_x2nestos_convert.py",
    "tests/boot/test_firstboot.py",
    "tests/boot/test_live_customize.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    # stable: every other test keeps its place, and a file's tests stay together
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONGEST_FIRST)))
