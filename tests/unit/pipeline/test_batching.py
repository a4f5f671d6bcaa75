"""The pipeline's batch forming, stated as properties: one call never holds more recipients than
the bucket's burst (so a batch sent at once cannot break the rate), than SES's bulk limit or than
may be in flight; every batch takes one token per recipient before it goes."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from sesender.config import PipelineConfig
from sesender.pipeline.pipeline import MAX_BATCH, batch_size
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
