"""The one-line reason x2nestos --host gives when the live environment fails: taken from the
installer's own journal, where the dead-man switch's banner names the cause (the banner text is
made by nestos_installer.deadman itself, so the two cannot drift apart)."""

from __future__ import annotations

from nestos_installer.deadman import State, banner
from x2nestos.follow import summary

CAUSE = "install failed: image fetch failed: cannot connect to 127.0.0.1:9: connection refused"


def journal(*before: str, state: State = State.CHECK_FAILED) -> list[str]:
    """Journal lines as the controller receives them: what the installer said, then the
    banner (one journal entry per line, as the console shows it)."""
    return [*before, *banner(state, CAUSE).splitlines(), "nestos-installer: rebooting"]


def test_the_dead_man_verdict_is_the_reason() -> None:
    lines = journal("Read disk 0 B/?", "Error fetching '/x.sig': connection refused")
    assert summary(lines) == CAUSE


def test_the_verdict_after_writing_began_is_the_reason_too() -> None:
    assert summary(journal(state=State.WRITING)) == CAUSE


def test_without_a_verdict_the_last_lines_without_banner_rules() -> None:
    lines = ["one", "two", "#" * 60, "three", "", "four"]
    assert summary(lines) == "two | three | four"


def test_an_empty_journal_says_so() -> None:
    assert summary([]) == "no journal lines"
