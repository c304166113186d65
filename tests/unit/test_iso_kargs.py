"""Karg editor semantics (spec §4.10): delete, then append, then replace, whatever the order."""

from __future__ import annotations

import pytest

from nestos_installer.errors import UsageError
from nestos_installer.kargs import edit_kargs, parse_replace


def test_order_is_delete_append_replace():
    cur = "a b=1 c"
    assert edit_kargs(cur, append=["d", "b=1"], delete=["b=1"], replace=["b=1=2"]) == "a c d b=2"


def test_delete_every_non_overlapping_occurrence():
    assert edit_kargs("x a a a y", delete=["a"]) == "x a y"
    assert edit_kargs("x a y a", delete=[" a "]) == "x y"


def test_append_and_strip():
    assert edit_kargs("", append=["  foo=bar "]) == "foo=bar"
    assert edit_kargs("root=x", append=["quiet", "quiet"]) == "root=x quiet quiet"


def test_replace_matches_whole_karg_only():
    assert edit_kargs("foo=oldval foo=oldval2", replace=["foo=oldval=new"]) == "foo=new foo=oldval2"


@pytest.mark.parametrize("bad", ["foo", "foo=bar", "a=b=c=d", "=a=b"])
def test_bad_replace(bad):
    with pytest.raises(UsageError, match="Wrong input, format should be: KEY=OLD=NEW"):
        parse_replace(bad)
