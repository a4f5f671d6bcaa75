"""The decision after one attempt: 2xx delivered, 410 gone, the rest retried on the schedule
with jitter, then failed."""

from __future__ import annotations

import random

import pytest

from sesender.webhooks.models import AttemptOutcome
from sesender.webhooks.retry import DEFAULT_SCHEDULE, decide

NOW = 1_000_000


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert decide(
        attempt=1, status_code=status, now_ms=NOW, schedule=DEFAULT_SCHEDULE, rng=random.Random(1)
    ) == (AttemptOutcome.DELIVERED, NOW)


def test_410_is_gone() -> None:
    assert decide(
        attempt=3, status_code=410, now_ms=NOW, schedule=DEFAULT_SCHEDULE, rng=random.Random(1)
    ) == (AttemptOutcome.GONE, NOW)


@pytest.mark.parametrize("status", [None, 302, 400, 404, 500, 503])
def test_the_rest_is_retried_on_the_schedule_with_jitter_then_failed(status: int | None) -> None:
    rng = random.Random(7)
    delays = []
    for attempt in range(1, len(DEFAULT_SCHEDULE) + 1):
        outcome, due = decide(
            attempt=attempt, status_code=status, now_ms=NOW, schedule=DEFAULT_SCHEDULE, rng=rng
        )
        assert outcome is AttemptOutcome.RETRY
        delays.append((due - NOW) / 1000)
    for delay, planned in zip(delays, DEFAULT_SCHEDULE, strict=True):
        assert planned * 0.9 <= delay <= planned * 1.1
    assert len(set(delays)) == len(delays)
    assert 24 * 3600 < sum(DEFAULT_SCHEDULE) < 30 * 3600  # "over about a day"
    outcome, _ = decide(
        attempt=len(DEFAULT_SCHEDULE) + 1,
        status_code=status,
        now_ms=NOW,
        schedule=DEFAULT_SCHEDULE,
        rng=rng,
    )
    assert outcome is AttemptOutcome.FAILED
