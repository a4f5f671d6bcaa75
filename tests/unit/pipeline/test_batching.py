"""The pipeline's batch forming, stated as properties: one call never holds more recipients than
the bucket's burst (so a batch sent at once cannot break the rate), than SES's bulk limit or than
may be in flight; every batch takes one token per recipient before it goes."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors import TokenBucket, open_pipe
from sesender.config import PipelineConfig
from sesender.models import ClaimedEmail, Outcome, Stopped
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.pipeline import MAX_BATCH, batch_size
from sesender.pipeline.rate_limiter import RateLimiter
from sesender.pipeline.shared_rate import SharedRate
from tests.unit.pipeline.fakes import trio_ms
from tests.unit.pipeline.test_rate_limiter import BatchRig, email


def config(rate: float, burst: float, max_in_flight: int) -> PipelineConfig:
    return PipelineConfig(
        max_send_per_second=rate,
        burst=burst,
        send_channel_size=100,
        post_channel_size=100,
        scheduler_interval=10,
        schedule_timezone=ZoneInfo("UTC"),
        max_attempts=5,
        retry_base_delay=1.0,
        retry_max_delay=10.0,
        flush_size=100,
        flush_interval=0.5,
        pause_probe_interval=5.0,
        cap_to_account_rate=False,
        max_in_flight=max_in_flight,
    )


@given(
    rate=st.floats(min_value=0.1, max_value=10_000),
    burst=st.floats(min_value=1, max_value=1_000),
    max_in_flight=st.integers(min_value=0, max_value=500),
)
def test_a_batch_is_the_largest_that_fits_the_burst_the_bulk_limit_and_in_flight(
    rate: float, burst: float, max_in_flight: int
) -> None:
    settings = config(rate, burst, max_in_flight)
    size = batch_size(settings)
    bounds = (burst, MAX_BATCH, settings.in_flight_limit())
    assert size >= 1
    assert all(size <= bound for bound in bounds)
    assert not all(size + 1 <= bound for bound in bounds)


@pytest.mark.parametrize(("rate", "burst", "max_batch", "count"), [(10, 5, 5, 23), (50, 7, 3, 20)])
async def test_every_email_that_passes_took_one_token_in_a_batch_no_larger_than_allowed(
    autojump_clock: trio.testing.MockClock, rate: float, burst: float, max_batch: int, count: int
) -> None:
    rig = BatchRig(rate=rate, burst=burst, max_batch=max_batch)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, count + 1):
            rig.send_tx.send_nowait(email(i))
        await rig.send_tx.aclose()
    sizes = [len(ids) for _, ids in rig.batches]
    assert sum(sizes) == count
    assert max(sizes) <= max_batch <= burst
    statistics = rig.limiter.statistics()
    assert (statistics.passed, statistics.batches) == (count, len(sizes))
    assert rig.bucket.statistics().acquired_total == count


class FakeTokenStore:
    """The shared bucket's row: refuses the first ``refusals`` requests (nothing available),
    then grants every request exactly its count (never tokens ahead) and records it."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.taken: list[float] = []

    async def take_tokens(
        self, name: str, count: float, *, rate: float, burst: float, at_most: float | None = None
    ) -> tuple[float, float]:
        if self.refusals:
            self.refusals -= 1
            return 0.0, 0.0
        self.taken.append(count)
        return count, burst


def cancel(rig: BatchRig, topic: str, up_to_id: int) -> None:
    mark, _ = rig.control.cancel_topic_in_memory(topic, up_to_id=up_to_id)
    rig.control.cancelled.confirm(mark)


async def test_with_several_instances_a_batch_takes_its_tokens_from_the_shared_rate_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The shared bucket refuses at first (the batch waits for its refill); a cancellation while
    it waits drops only the cancelled email, and the rest takes a token each, shared too."""
    store = FakeTokenStore(refusals=1)
    rig = BatchRig(rate=100, burst=3, max_batch=3)
    plain = rig.limiter
    rig.limiter = RateLimiter(
        bucket=rig.bucket,
        send_rx=plain._send_rx,
        dispatch_tx=plain._dispatch_tx,
        outcome_tx=plain._outcome_tx,
        control=rig.control,
        now_ms=trio_ms,
        max_batch=3,
        shared=SharedRate(store=store, rate=lambda: 1.0, burst=3),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i, topic in enumerate(("keep", "drop", "keep"), start=1):
            rig.send_tx.send_nowait(email(i, topic))
        await trio.sleep(1)  # the refusal means a wait of 3 s for 3 tokens at 1/s ...
        cancel(rig, "drop", up_to_id=3)  # ... which this interrupts
        await rig.send_tx.aclose()
    assert rig.batches == [(1, [1, 3])]
    assert rig.outcomes() == [Stopped(2)]
    assert store.taken == [2]


async def test_a_cancellation_while_the_gate_is_closed_leaves_the_batch_before_it_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=100, burst=3, max_batch=3)
    rig.control.gate.pause("SendingPausedException")
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i, topic in enumerate(("keep", "drop", "keep"), start=1):
            rig.send_tx.send_nowait(email(i, topic))
        await trio.sleep(10)
        cancel(rig, "drop", up_to_id=3)
        await trio.sleep(10)
        assert rig.batches == []
        rig.control.gate.resume()
        await rig.send_tx.aclose()
    assert rig.batches == [(20, [1, 3])]
    assert rig.outcomes() == [Stopped(2)]
    assert rig.bucket.statistics().acquired_total == 2
    statistics = rig.limiter.statistics()
    assert (statistics.passed, statistics.stopped, statistics.deferred) == (2, 1, 0)


async def test_a_limiter_given_no_batch_size_sends_one_email_at_a_time() -> None:
    """The default fits any bucket, even one with a burst of one."""
    limiter = RateLimiter(
        bucket=TokenBucket(10, 1),
        send_rx=open_pipe[ClaimedEmail]("send", 1)[1],
        dispatch_tx=open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)[0],
        outcome_tx=open_pipe[Sequence[Outcome]]("outcome", 1)[0],
        control=PipelineControl(),
        now_ms=trio_ms,
    )
    assert limiter.max_batch == 1
