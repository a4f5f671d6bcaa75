"""The token bucket's rate guarantee as a property over a hand-driven clock (issue 20).

After any pattern of idle periods and takes, no window of length ``w`` hands out more than
``burst + rate * w`` tokens. The earlier idle test only read ``statistics().tokens`` (capped at
``burst``) and never took tokens, so deleting the "bucket is full: restart the accounting" block
of ``TokenBucket._take`` went unnoticed: a bucket of rate 2 and burst 4, idle for 100 s, then
handed out 204 tokens at once. That block keeps sesender under the SES rate after a quiet night;
``test_after_a_long_idle_only_the_burst_is_available`` fails on that mutant.

The clock is a plain variable, and only ``acquire_nowait`` is used, so no trio run is needed: the
bucket reads the time only through ``clock``.
"""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ratelimit import TokenBucket


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take_all(bucket: TokenBucket, *, limit: int = 100_000) -> int:
    """Take single tokens until the bucket refuses; return how many."""
    taken = 0
    while taken < limit:
        try:
            bucket.acquire_nowait()
        except trio.WouldBlock:
            return taken
        taken += 1
    return taken


def test_after_a_long_idle_only_the_burst_is_available() -> None:
    clock = ManualClock()
    bucket = TokenBucket(2, 4, clock=clock)
    assert take_all(bucket) == 4
    clock.now += 100
    assert take_all(bucket) == 4
    clock.now += 0.5  # one more token at rate 2
    assert take_all(bucket) == 1


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 14.0, 50.0]),
    burst=st.integers(min_value=1, max_value=20),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=200, allow_nan=False),  # idle before this step
            st.integers(min_value=0, max_value=60),  # tokens tried
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_no_window_holds_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    grants: list[float] = []  # the instant of each token handed out
    for idle, tries in steps:
        clock.now += idle
        for _ in range(tries):
            try:
                bucket.acquire_nowait()
            except trio.WouldBlock:
                break
            grants.append(clock.now)
    # Every window starting at a grant and ending at a later grant (the tightest windows).
    for start_index, start in enumerate(grants):
        for end_index in range(start_index, len(grants)):
            window = grants[end_index] - start
            handed = end_index - start_index + 1
            assert handed <= burst + rate * window + 1e-9, (start, grants[end_index], handed)
    # And the bucket is not stingy: after refilling fully it gives exactly the burst.
    clock.now += burst / rate + 1
    assert take_all(bucket) == burst
