"""The retry policy's guarantees, stated as properties (issue 20: only the first backoff was
checked, so growth, the cap and the jitter bounds could change unnoticed).

- ``can_retry``: exactly ``max_attempts`` attempts in all.
- ``delay``: equal jitter, in ``[ceiling / 2, ceiling]`` where the ceiling doubles from
  ``base_delay`` per attempt made and never exceeds ``max_delay``; both halves are used.
- ``store_retry_delay``: the listed pauses, then the last one for ever.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesender.pipeline.retry import STORE_RETRY_DELAYS, RetryPolicy, store_retry_delay

POLICY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0)


class FixedDraw(random.Random):
    """A ``Random`` whose ``uniform(a, b)`` returns ``a + fraction * (b - a)``."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + self.fraction * (b - a)


def ceiling(policy: RetryPolicy, attempts_made: int) -> float:
    return float(min(policy.max_delay, policy.base_delay * 2 ** max(0, attempts_made - 1)))


def test_exactly_max_attempts_are_made() -> None:
    assert [POLICY.can_retry(made) for made in range(7)] == [True] * 5 + [False] * 2


@pytest.mark.parametrize(
    ("attempts_made", "expected"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (30, 60.0)],
)
def test_the_ceiling_doubles_per_attempt_and_is_capped(attempts_made: int, expected: float) -> None:
    """The largest delay (the random half at its top) is the ceiling: it doubles, then caps."""
    assert POLICY.delay(attempts_made, FixedDraw(1.0)) == expected
    assert POLICY.delay(attempts_made, FixedDraw(0.0)) == expected / 2


@given(
    attempts_made=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=3600),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_lies_within_half_the_ceiling_and_the_ceiling(
    attempts_made: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=base, max_delay=cap)
    top = ceiling(policy, attempts_made)
    delay = policy.delay(attempts_made, random.Random(seed))
    assert type(delay) is float
    assert top / 2 <= delay <= top
    assert delay <= cap


def test_the_jitter_spreads_over_the_whole_upper_half() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay(4, rng) for _ in range(2000)]
    assert min(delays) < 4.1  # near the floor, 4
    assert max(delays) > 7.9  # near the ceiling, 8
    assert len(set(delays)) > 1900


def test_store_retry_delays_grow_then_stay_at_the_last() -> None:
    assert [store_retry_delay(n) for n in range(1, 8)] == [0.1, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]
    assert STORE_RETRY_DELAYS == (0.1, 0.5, 1.0, 2.0, 5.0)
