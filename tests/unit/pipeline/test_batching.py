"""The pipeline's batch forming, stated as properties: one call never holds more recipients than
the bucket's burst (so a batch sent at once cannot break the rate), than SES's bulk limit or than
may be in flight; every batch takes one token per recipient before it goes."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from sesender.config import PipelineConfig
from sesender.pipeline.pipeline import MAX_BATCH, batch_size


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
