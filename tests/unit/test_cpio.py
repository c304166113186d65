"""newc read/write and member-name checks: examples for each hostile field, and properties
(hypothesis) for round trips, arbitrary and mutated archives, names, padding and truncation."""

from __future__ import annotations

import stat
import subprocess
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.initrd.gen_initrds import gnu_cpio, negative_size_cpio, raw_cpio
from helpers.capabilities import require_tools
from nestos_installer import cpio
from nestos_installer.errors import ImageFormatError

FAST = settings(
    max_examples=200,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# names as an archive may carry them: any bytes but NUL, decoded the way the reader does
names = (
    st.binary(min_size=1, max_size=40)
    .filter(lambda b: b"\0" not in b)
    .map(cpio.decode_name)
    .filter(lambda n: n != cpio.TRAILER)
)
u32 = st.integers(0, cpio.MAX_FIELD)
entries = st.builds(
    cpio.Entry,
    name=names,
    mode=u32,
    data=st.binary(max_size=300),
    nlink=u32,
    ino=u32,
    rdev=st.tuples(u32, u32),
)
BAD_FIELDS = [
    b"-00000E4",
    b"+00000E4",
    b" 00000E4",
    b"0x0000E4",
    b"0000_0E4",
    b"000000E ",
    b"0000000G",
]


def parse(data: bytes) -> List[cpio.Entry]:
    """read_archive, allowed to fail only with the project's typed error."""
    try:
        return cpio.read_archive(data)
    except ImageFormatError as e:
        assert "\n" not in str(e)  # one line in user terms
        return []


@FAST
@given(st.lists(entries, max_size=6))
def test_write_then_read_round_trips(members: List[cpio.Entry]) -> None:
    assert cpio.read_archive(cpio.write(members)) == members


@FAST
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_give_entries_or_a_typed_error(data: bytes) -> None:
    parse(data)
    parse(b"070701" + data)


@FAST
@given(st.lists(entries, min_size=1, max_size=4), st.data())
def test_mutated_archives_give_entries_or_a_typed_error(
    members: List[cpio.Entry], data: st.DataObject
) -> None:
    archive = bytearray(cpio.write(members))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(archive) - 1))
        archive[pos] = data.draw(st.sampled_from(b"-+ x_0fFG\0\xff"))
    cut = data.draw(st.integers(0, len(archive)))
    for got in (parse(bytes(archive)), parse(bytes(archive[:cut]))):
        assert all(isinstance(e, cpio.Entry) and e.name for e in got)


@FAST
@given(st.lists(entries, min_size=1, max_size=4), st.data())
def test_truncation_is_an_error_and_padding_is_consumed(
    members: List[cpio.Entry], data: st.DataObject
) -> None:
    archive = cpio.write(members)
    trailer_end = len(archive)
    cut = data.draw(st.integers(0, trailer_end - 1))
    with pytest.raises(ImageFormatError):
        cpio.read_archive(archive[:cut] if cut < trailer_end - 3 else archive[: trailer_end - 4])
    stream = cpio.Stream(cpio.MemorySource(archive + b"\0" * 8))
    assert list(cpio.read_entries(stream)) == members
    assert stream.offset == trailer_end  # the position moved exactly over the archive


@pytest.mark.parametrize("field", range(13))
@pytest.mark.parametrize("bad", BAD_FIELDS)
def test_every_field_must_be_eight_hex_digits(field: int, bad: bytes) -> None:
    archive = bytearray(cpio.write([cpio.Entry("a", 0o100644, b"x" * 100)]))
    archive[6 + 8 * field : 14 + 8 * field] = bad
    with pytest.raises(ImageFormatError, match="fields must be 8 hex digits"):
        cpio.read_archive(bytes(archive))


def test_negative_file_size_is_refused_not_looped() -> None:
    """int("-00000E4", 16) == -228: the old parser jumped back and repeated forever."""
    with pytest.raises(ImageFormatError, match="bad cpio header at offset 0"):
        cpio.read_archive(negative_size_cpio())


def _with_namesize(namesize: int, name: bytes) -> bytes:
    fields = [0, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, namesize, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields) + name


@pytest.mark.parametrize(
    "namesize,name,match",
    [
        (0, b"", "bad cpio name size 0"),
        (cpio.PATH_MAX + 1, b"a" * 5000, "bad cpio name size"),
        (4, b"abcd", "not NUL-terminated"),
        (2, b"\0\0", "empty cpio member name"),
        (60, b"short\0", "cpio name runs past end of archive"),
    ],
)
def test_name_field_checks(namesize: int, name: bytes, match: str) -> None:
    with pytest.raises(ImageFormatError, match=match):
        cpio.read_archive(_with_namesize(namesize, name) + b"\0" * 8)


def test_member_size_bounded_by_what_is_left() -> None:
    good = raw_cpio([("a", b"x" * 100)])
    bad = good.replace(b"%08X" % 100, b"%08X" % 0xFFFFFFFF, 1)
    with pytest.raises(ImageFormatError, match="cpio member a runs past end of archive"):
        cpio.read_archive(bad)


def test_reads_gnu_cpio_and_crc_variant() -> None:
    require_tools("cpio")
    got = cpio.read_archive(gnu_cpio({"x/y": b"1", "z": b"22"}))
    assert [(e.name, e.data) for e in got if e.is_file] == [("x/y", b"1"), ("z", b"22")]
    crc = subprocess.run(
        ["cpio", "-o", "-H", "crc", "--quiet"], input=b"", capture_output=True, check=True
    ).stdout
    assert crc.startswith(b"070702") and cpio.read_archive(crc) == []


def test_writer_output_read_by_gnu_cpio() -> None:
    require_tools("cpio")
    archive = cpio.write(
        [cpio.Entry("d", stat.S_IFDIR | 0o755), cpio.Entry("d/f", 0o100600, b"data")]
    )
    listing = subprocess.run(
        ["cpio", "-tv", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.splitlines()[1].startswith("-rw-------") and listing.split()[-1] == "d/f"


@pytest.mark.parametrize("name", ["", "a\0b", "x" * cpio.PATH_MAX])
def test_writer_refuses_names_it_cannot_store(name: str) -> None:
    with pytest.raises(ImageFormatError, match="cannot store the name"):
        cpio.write([cpio.Entry(name, 0o100644)])


components = st.sampled_from(["a", "..", ".", "", "b c", "caf\udce9", "x.."])


@FAST
@given(st.booleans(), st.lists(components, min_size=1, max_size=5))
def test_member_path_checks(absolute: bool, parts: List[str]) -> None:
    path = ("/" if absolute else "") + "/".join(parts)
    traversal = path.startswith("/") or ".." in path.split("/")
    problem = cpio.path_problem(path)
    if not path:
        assert problem == "is empty"
    elif traversal:
        assert problem == "contains path traversal"
        with pytest.raises(ImageFormatError, match="contains path traversal"):
            cpio.check_member_path(path)
    else:
        assert problem is None and cpio.check_member_path(path) == path
    sloppy = any(p in ("", ".") for p in path.split("/"))
    assert (cpio.path_problem(path, normalized=True) is None) == (problem is None and not sloppy)


def test_nul_inside_a_name_is_refused() -> None:
    with pytest.raises(ImageFormatError, match="contains a NUL byte"):
        cpio.check_member_path("etc/a\0b")


@FAST
@given(st.lists(st.lists(st.sampled_from("ab"), min_size=1, max_size=4), max_size=8))
def test_parents_come_first_once(paths_parts: List[List[str]]) -> None:
    paths = {"/".join(p) + "f" for p in paths_parts}  # "f" suffix: no path is another's parent
    order = list(cpio.parents_first(paths))
    names = [p for p, _ in order]
    assert len(names) == len(set(names))
    assert [p for p, is_dir in order if not is_dir] == sorted(paths)
    for i, (p, _) in enumerate(order):
        if "/" in p:
            assert p.rsplit("/", 1)[0] in names[:i]


def test_printable_escapes_undecodable_bytes_and_controls() -> None:
    name = cpio.decode_name(b"caf\xe9/\xff\n.txt")
    assert cpio.printable(name) == "caf\\xe9/\\xff\\n.txt"
    assert cpio.printable("usr/lib/é") == "usr/lib/é"
    assert cpio.encode_name(name) == b"caf\xe9/\xff\n.txt"
