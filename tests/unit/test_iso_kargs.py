"""Karg editor semantics (spec §4.10): delete, then append, then replace, whatever the order;
and the edit applied to the karg areas of ISOs of every layout that has them."""

from __future__ import annotations

import io

import pytest

from fixtures.iso.gen_isos import build
from helpers.capabilities import require_tools
from nestos_installer.errors import InputRefused, UsageError
from nestos_installer.kargs import edit_kargs, parse_replace
from nestos_installer.live.embed import LiveIso


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


@pytest.fixture(scope="module")
def karg_isos(tmp_path_factory):
    require_tools("xorriso")
    d = str(tmp_path_factory.mktemp("iso"))
    return {n: build(n, d) for n in ("2021-01", "2021-09", "s390x", "s390x-00", "nestos")}


@pytest.mark.parametrize("layout", ["2021-01", "2021-09", "s390x", "s390x-00", "nestos"])
def test_edit_kargs_in_every_area_of_an_iso(karg_isos, layout):
    """Read the karg areas of a real ISO, edit, apply the writes, and read them back."""
    data = bytearray(open(karg_isos[layout], "rb").read())
    iso = LiveIso(io.BytesIO(bytes(data)))
    default = iso.require_kargs().default
    assert iso.current_kargs() == default and "ignition.firstboot" in default
    new = edit_kargs(default, append=["foo=bar"], delete=["ignition.firstboot"])
    for off, chunk in iso.kargs_writes(new):
        data[off : off + len(chunk)] = chunk
    again = LiveIso(io.BytesIO(bytes(data)))
    assert again.current_kargs() == new and again.kargs_customized()
    assert again.require_kargs().default == default
    with pytest.raises(InputRefused, match="kargs too large for area"):
        again.kargs_writes("x" * again.require_kargs().size)
    with pytest.raises(InputRefused, match="not valid UTF-8"):
        again.kargs_writes("x=\udcff")  # a non-UTF-8 argv byte, as Python decodes it
