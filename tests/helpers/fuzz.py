"""Hypothesis settings and byte mutations shared by the property tests of hostile-input parsers.

About 200 examples each, a per-example deadline, no example database left in the checkout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import List, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def edits(size: int, max_edits: int = 8) -> st.SearchStrategy[List[Tuple[int, int]]]:
    """(position, new byte value) pairs inside a buffer of `size` bytes."""
    return st.lists(
        st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=max_edits
    )


def mutate(data: bytes, changes: List[Tuple[int, int]], start: int = 0) -> bytes:
    """`data` with each (position, value) applied at start + position."""
    out = bytearray(data)
    for pos, value in changes:
        out[start + pos] = value
    return bytes(out)
