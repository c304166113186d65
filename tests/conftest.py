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
