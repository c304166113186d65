"""The reader stack: tee, hash, count, limit, peek and the copy helpers on real byte streams."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from nestos_installer.errors import TargetError
from nestos_installer.pipeline.readers import (
    BUFSIZE,
    BytesReader,
    CountingReader,
    HashingReader,
    LimitReader,
    PeekReader,
    TeeReader,
    copy_stream,
    read_all,
    read_exactly,
)


class Dribble:
    """A source that returns short reads of varying size, like a socket or a pipe."""

    def __init__(self, data: bytes, seed: int = 1) -> None:
        self.data = data
        self.pos = 0
        self.rng = random.Random(seed)
        self.reads_after_eof = 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.data):
            self.reads_after_eof += 1
        if n < 0:
            n = len(self.data)
        n = min(n, self.rng.randint(1, 70_000))
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


DATA = random.Random(7).randbytes(1_000_003)


def test_stack_tee_hash_count_sees_every_byte_once() -> None:
    seen = []
    sizes = []
    src = Dribble(DATA)
    tee = TeeReader(src, [seen.append, lambda b: sizes.append(len(b))])
    hashing = HashingReader(tee)
    counting = CountingReader(hashing)
    out = io.BytesIO()
    total = copy_stream(counting, out.write, bufsize=65536)
    assert total == len(DATA) == counting.count == sum(sizes)
    assert out.getvalue() == DATA
    assert b"".join(seen) == DATA
    assert hashing.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert tee.eof


def test_hashing_reader_other_algorithm() -> None:
    r = HashingReader(BytesReader(b"abc"), "sha512")
    assert read_all(r) == b"abc"
    assert r.hexdigest() == hashlib.sha512(b"abc").hexdigest()


def test_tee_eof_flag_only_at_end() -> None:
    tee = TeeReader(BytesReader(b"xyz"), [])
    assert tee.read(2) == b"xy" and not tee.eof
    assert tee.read(0) == b"" and not tee.eof
    assert tee.read(5) == b"z" and not tee.eof
    assert tee.read(5) == b"" and tee.eof


def test_read_exactly_loops_over_short_reads() -> None:
    src = Dribble(DATA, seed=3)
    first = read_exactly(src, 300_000)
    assert first == DATA[:300_000]
    rest = read_exactly(src, 10 * len(DATA))
    assert rest == DATA[300_000:]
    assert read_exactly(src, 5) == b""
    assert read_exactly(BytesReader(b"abc"), 0) == b""


def _collision(offset: int) -> Exception:
    return TargetError(f"collision at offset {offset}")


@pytest.mark.parametrize("extra", [b"", b"\0", b"more data"])
def test_limit_reader(extra: bytes) -> None:
    src = Dribble(DATA[:500_000] + extra)
    lim = LimitReader(src, 500_000, _collision)
    out = bytearray()
    if extra:
        with pytest.raises(TargetError, match="collision at offset 500000"):
            copy_stream(lim, out.extend, bufsize=100_000)
    else:
        copy_stream(lim, out.extend, bufsize=100_000)
    assert bytes(out) == DATA[:500_000]


def test_limit_reader_shorter_input_is_fine() -> None:
    lim = LimitReader(BytesReader(b"abc"), 10, _collision)
    assert read_all(lim) == b"abc"
    assert lim.read(4) == b""


def test_limit_reader_zero_limit() -> None:
    assert LimitReader(BytesReader(b""), 0, _collision).read(10) == b""
    with pytest.raises(TargetError, match="offset 0"):
        LimitReader(BytesReader(b"x"), 0, _collision).read(10)


def test_peek_reader_does_not_consume() -> None:
    src = Dribble(DATA, seed=5)
    p = PeekReader(src)
    head = p.peek(100_000)
    assert head == DATA[:100_000]
    assert p.peek(10) == DATA[:10]
    assert read_exactly(p, 50) == DATA[:50]
    assert p.peek(6) == DATA[50:56]
    rest = read_all(p, bufsize=30_000)
    assert rest == DATA[50:]
    assert p.peek(10) == b""
    assert p.read(10) == b""


def test_peek_past_eof() -> None:
    p = PeekReader(BytesReader(b"abc", chunk=1))
    assert p.peek(10) == b"abc"
    assert p.read() == b"abc"
    assert p.read(1) == b""


def test_bufsize_is_big() -> None:
    assert BUFSIZE >= 1 << 20
