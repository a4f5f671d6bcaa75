"""Batches through the pipeline, observed from outside the running process.

At ``MAX_SEND_PER_SECOND=2000`` (burst 200 by default) the pipeline groups the queued emails into
batches of up to 50 (SES's bulk limit) and hands each to the backend in one call. Each recipient
still takes its own token: the whole queue cannot go out faster than the burst plus the rate
allow, however large the batches. Every recipient is attempted and sent exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.harness import ServiceProcess, submit, wait_topic
from tests.e2e.test_observability import scrape

pytestmark = pytest.mark.e2e

RATE = 2000
BURST = 200  # the default, max(1, rate / 10)
EMAILS = 4000


def test_a_queue_goes_out_in_batches_and_no_faster_than_the_rate(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(SENDER_BACKEND="memory", MAX_SEND_PER_SECOND=str(RATE))
    with service.client() as client:
        started = time.monotonic()
        submit(client, topic="batches", emails=[f"b{n}@example.com" for n in range(EMAILS)])
        counts = wait_topic(client, "batches", count=EMAILS, timeout=60, interval=0.05)
        elapsed = time.monotonic() - started
    assert counts.get("Failed", 0) == 0
    # The bucket starts full (BURST tokens); every other recipient waited for its own token.
    assert elapsed >= (EMAILS - BURST) / RATE
    samples = scrape(service)
    assert samples[("sesender_send_attempts_total", ())] == EMAILS
    assert samples[("sesender_emails_total", (("outcome", "sent"),))] == EMAILS
    calls = samples[("sesender_send_calls_total", ())]
    # A queue of thousands fills batches: at least 25 recipients per call on average.
    assert calls <= EMAILS / 25
    assert samples[("sesender_sends_in_flight_limit", ())] == 2 * RATE
