"""TokenBucket: exact rates, bursts, FIFO fairness, cancellation and rate changes.

Every timing assertion is exact (==): the autojump clock wakes sleepers at precisely the instant
the bucket computed, and the bucket computes each instant without accumulated float error.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing

from actors.ratelimit import TokenBucket, TokenBucketStatistics


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf])
async def test_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be a positive finite number"):
        TokenBucket(rate, 1)
    bucket = TokenBucket(1, 1)
    with pytest.raises(ValueError, match="rate must be a positive finite number"):
        bucket.set_rate(rate)
    assert bucket.rate == 1


@pytest.mark.parametrize("burst", [0, 0.5, math.nan, math.inf])
async def test_burst_must_be_at_least_one(burst: float) -> None:
    with pytest.raises(ValueError, match="burst must be a finite number >= 1"):
        TokenBucket(1, burst)


@pytest.mark.parametrize("initial", [-1, 3.5, math.nan])
async def test_initial_must_fit_the_bucket(initial: float) -> None:
    with pytest.raises(ValueError, match="initial must be between 0 and burst"):
        TokenBucket(1, 3, initial=initial)


@pytest.mark.parametrize("count", [0, -1, 3.5, math.nan])
async def test_count_must_be_positive_and_fit_the_burst(count: float) -> None:
    bucket = TokenBucket(1, 3)
    with pytest.raises(ValueError, match="count must be > 0 and <= burst"):
        bucket.acquire_nowait(count)
    with pytest.raises(ValueError, match="count must be > 0 and <= burst"):
        await bucket.acquire(count)
    assert bucket.statistics().acquired_total == 0


async def test_starts_full_and_refills_smoothly_up_to_burst(
    autojump_clock: trio.abc.Clock,
) -> None:
    bucket = TokenBucket(rate=2, burst=4)
    assert (bucket.rate, bucket.burst) == (2, 4)
    for _ in range(4):
        bucket.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        bucket.acquire_nowait()
    await trio.sleep(0.25)
    assert bucket.statistics().tokens == 0.5
    await trio.sleep(0.25)
    bucket.acquire_nowait()
    await trio.sleep(100)
    stats = bucket.statistics()
    assert stats == TokenBucketStatistics(rate=2, burst=4, tokens=4, waiting=0, acquired_total=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tokens = 0  # type: ignore[misc]


@pytest.mark.parametrize(("rate", "count"), [(10, 25), (7, 1000), (3, 10), (0.3, 7)])
async def test_n_acquisitions_from_empty_take_exactly_n_over_rate(
    autojump_clock: trio.abc.Clock, rate: float, count: int
) -> None:
    bucket = TokenBucket(rate, burst=5, initial=0)
    done_at = []
    for _ in range(count):
        await bucket.acquire()
        done_at.append(trio.current_time())
    assert done_at == [k / rate for k in range(1, count + 1)]
    assert trio.current_time() == count / rate
    assert bucket.statistics().acquired_total == count


async def test_burst_first_then_the_rate(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=2, burst=3)
    done_at = []
    for _ in range(6):
        await bucket.acquire()
        done_at.append(trio.current_time())
    assert done_at == [0, 0, 0, 0.5, 1.0, 1.5]


async def test_fractional_counts(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=4, burst=10, initial=0)
    await bucket.acquire(2.5)
    assert trio.current_time() == 0.625
    await bucket.acquire(0.5)
    assert trio.current_time() == 0.75


async def test_waiters_are_served_first_in_first_out(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=1, burst=3, initial=0)
    served: list[tuple[str, float]] = []

    async def take(name: str, count: float) -> None:
        await bucket.acquire(count)
        served.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "big", 3)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "small", 1)
        await trio.sleep(1.5)
        # A token exists, but the head is still waiting for three: nobody may overtake it.
        assert bucket.statistics().tokens == 1.5
        assert bucket.statistics().waiting == 2
        with pytest.raises(trio.WouldBlock):
            bucket.acquire_nowait()
    assert served == [("big", 3), ("small", 4)]


async def test_new_acquire_queues_behind_waiters(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=1, burst=2, initial=0)
    served: list[str] = []

    async def take(name: str, count: float) -> None:
        await bucket.acquire(count)
        served.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "first", 2)
        await trio.sleep(1)
        nursery.start_soon(take, "second", 1)
    assert served == ["first", "second"]
    assert trio.current_time() == 3


async def test_cancelled_head_hands_on_without_losing_tokens(
    autojump_clock: trio.abc.Clock,
) -> None:
    bucket = TokenBucket(rate=1, burst=3, initial=0)
    served: list[tuple[str, float]] = []

    async def take(name: str, count: float) -> None:
        await bucket.acquire(count)
        served.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(2):
            nursery.start_soon(take, "patient", 1)
            await take("head", 3)
    # The head gave up at 2; the next waiter got one of the two tokens that had accumulated.
    assert served == [("patient", 2)]
    stats = bucket.statistics()
    assert (stats.tokens, stats.waiting, stats.acquired_total) == (1, 0, 1)


async def test_cancelled_middle_waiter_is_skipped(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=1, burst=3, initial=0)
    served: list[tuple[str, float]] = []

    async def take(name: str, count: float) -> None:
        await bucket.acquire(count)
        served.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "head", 2)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await take("middle", 1)
        nursery.start_soon(take, "tail", 1)
    assert served == [("head", 2), ("tail", 3)]
    assert bucket.statistics().acquired_total == 3


async def test_cancelled_before_acquiring_takes_nothing(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=1, burst=1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await bucket.acquire()
    assert scope.cancelled_caught
    assert bucket.statistics().tokens == 1


@pytest.mark.parametrize(("new_rate", "ready_at"), [(0.5, 1.5), (2, 0.75)])
async def test_set_rate_applies_to_the_waiting_head_at_once(
    autojump_clock: trio.abc.Clock, new_rate: float, ready_at: float
) -> None:
    bucket = TokenBucket(rate=1, burst=1, initial=0)
    done_at: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        done_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.sleep(0.5)
        bucket.set_rate(new_rate)
        assert bucket.statistics().tokens == 0.5
    assert done_at == [ready_at]


async def test_set_rate_keeps_tokens(autojump_clock: trio.abc.Clock) -> None:
    bucket = TokenBucket(rate=1, burst=4)
    bucket.acquire_nowait(2)
    bucket.set_rate(4)
    assert bucket.statistics().tokens == 2
    await trio.sleep(0.25)
    assert bucket.statistics().tokens == 3


def test_injected_clock_drives_the_sync_api_without_trio() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2, burst=2, clock=lambda: now[0])
    bucket.acquire_nowait(2)
    with pytest.raises(trio.WouldBlock):
        bucket.acquire_nowait()
    now[0] += 0.5
    bucket.acquire_nowait()
    assert bucket.statistics().tokens == 0


async def test_acquire_is_a_checkpoint_even_when_the_tokens_are_there() -> None:
    """trio's rule for every async function: a call that did not wait still lets the scheduler
    run other tasks, so a sender at full speed cannot starve the rest of the service."""
    bucket = TokenBucket(10, 5)
    with trio.testing.assert_checkpoints():
        await bucket.acquire(1)
