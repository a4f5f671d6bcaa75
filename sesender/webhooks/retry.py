"""What one delivery attempt decides for its event: delivered, retried when, failed, or gone.

A 2xx is success; 410 Gone disables the endpoint (the event stays queued for when it is enabled
again); anything else (another status, a redirect, a timeout, a refused or failed connection) is
retried after the next delay of the schedule, with jitter so that a receiver coming back is not hit
by every retry in the same second; after the last delay the event is failed (it can be resent).
The default schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) spans about 28 hours.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sesender.webhooks.models import AttemptOutcome

DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)


def decide(
    *,
    attempt: int,
    status_code: int | None,
    now_ms: int,
    schedule: Sequence[float],
    rng: random.Random,
    jitter: float = 0.1,
) -> tuple[AttemptOutcome, int]:
    """(outcome, due_at_ms of the next attempt) after attempt number ``attempt`` (1-based)."""
    if status_code is not None and 200 <= status_code < 300:
        return AttemptOutcome.DELIVERED, now_ms
    if status_code == 410:
        return AttemptOutcome.GONE, now_ms
    if attempt > len(schedule):
        return AttemptOutcome.FAILED, now_ms
    delay = schedule[attempt - 1] * rng.uniform(1 - jitter, 1 + jitter)
    return AttemptOutcome.RETRY, now_ms + round(delay * 1000)
