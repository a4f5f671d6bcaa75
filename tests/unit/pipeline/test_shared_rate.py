"""SharedRate against an in-memory bucket on trio's mock clock: tokens taken ahead of need only
when the rate refills more than a batch within ``AHEAD``, never more than that, and never spent
after ``EXPIRY``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sesender.pipeline.shared_rate import AHEAD, EXPIRY, SharedRate


class FakeBucket:
    """The bucket row, never refilled, every call recorded."""

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.calls: list[tuple[float, float]] = []  # (count, at_most)

    async def take_tokens(
        self, name: str, count: float, *, rate: float, burst: float, at_most: float | None = None
    ) -> tuple[float, float]:
        most = count if at_most is None else at_most
        self.calls.append((count, most))
        available = self.tokens
        taken = min(available, most) if available >= count else 0.0
        self.tokens -= taken
        return taken, available


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_high_rate_takes_several_batches_per_round_trip(
    clock: trio.testing.MockClock,
) -> None:
    bucket = FakeBucket(1_000_000)
    shared = SharedRate(store=bucket, rate=lambda: 100_000.0, burst=1_000_000)
    ahead = 100_000 * AHEAD  # 2,000 tokens: 40 batches of 50
    for _ in range(40):
        await shared.acquire(50)
    assert bucket.calls == [(50, ahead)]  # one round trip for all 40
    assert shared.statistics().ahead == 39
    await shared.acquire(50)  # the 41st: none left, asks again
    assert len(bucket.calls) == 2
    clock.jump(EXPIRY * 0.9)  # still in time: from the second grant
    await shared.acquire(50)
    assert len(bucket.calls) == 2
    clock.jump(EXPIRY * 0.2)  # too late: the rest of the second grant expires
    await shared.acquire(50)
    assert len(bucket.calls) == 3
    statistics = shared.statistics()
    assert statistics.expired == ahead - 100
    assert 1_000_000 - bucket.tokens == 3 * ahead  # taken from the bucket, all of it counted


async def test_at_an_ses_rate_every_batch_takes_exactly_its_own_tokens(
    clock: trio.testing.MockClock,
) -> None:
    bucket = FakeBucket(1_000_000)
    shared = SharedRate(store=bucket, rate=lambda: 2_000.0, burst=200)  # 2,000 x 0.02 = 40 < 50
    for _ in range(5):
        await shared.acquire(50)
    assert bucket.calls == [(50, 50)] * 5
    assert shared.statistics().ahead == 0


async def test_never_ahead_beyond_the_burst(clock: trio.testing.MockClock) -> None:
    bucket = FakeBucket(1_000_000)
    shared = SharedRate(store=bucket, rate=lambda: 100_000.0, burst=120)
    await shared.acquire(50)
    assert bucket.calls == [(50, 120)]


async def test_a_refusal_waits_for_the_refill_and_asks_again(
    clock: trio.testing.MockClock,
) -> None:
    bucket = FakeBucket(10)
    shared = SharedRate(store=bucket, rate=lambda: 100.0, burst=20)
    with trio.move_on_after(0.3):  # 40 missing at 100 a second: never within 0.3 s here
        await shared.acquire(50)
    assert shared.statistics().refusals >= 1
    assert bucket.tokens == 10  # nothing taken while refused
    assert trio.current_time() == pytest.approx(0.3)
