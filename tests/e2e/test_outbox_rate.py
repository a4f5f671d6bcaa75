"""The default backend (outbox) sends at the configured rate: not faster, and not much slower.

The sustained rate must match ``MAX_SEND_PER_SECOND``. The lower bound on the
duration is exact (the token bucket allows its depth plus the rate); the upper bound leaves 50%
slack plus half a second for a loaded CI machine and for polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.harness import ServiceProcess, submit, wait_topic

pytestmark = pytest.mark.e2e


def test_outbox_holds_200_per_second(start_service: Callable[..., ServiceProcess]) -> None:
    rate, burst, count = 200, 20, 600
    service = start_service(SENDER_BACKEND="outbox", MAX_SEND_PER_SECOND=str(rate))
    with service.client() as client:
        started = time.monotonic()
        submit(client, topic="rate", emails=[f"rate{n}@example.org" for n in range(count)])
        wait_topic(client, "rate", count=count, timeout=60, interval=0.05)
        elapsed = time.monotonic() - started
    ideal = (count - burst) / rate
    assert elapsed >= ideal, f"{count} sends in {elapsed:.2f}s: faster than {rate}/s"
    assert elapsed <= ideal * 1.5 + 0.5, (
        f"{count} sends took {elapsed:.2f}s ({count / elapsed:.0f}/s); configured {rate}/s"
    )
