"""Retry policy: exponential backoff with jitter, and what a failure means for an email."""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Pauses between attempts at a write the database refused (disk full, read-only file), for the
#: actors that must not lose what they hold: short at first, then every few seconds until it clears.
STORE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def store_retry_delay(failures: int) -> float:
    """The pause after the ``failures``-th refused write in a row (1-based)."""
    return STORE_RETRY_DELAYS[min(failures, len(STORE_RETRY_DELAYS)) - 1]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts every attempt (the first too); delays double from ``base_delay``.

    The delay is "equal jitter": half fixed, half random, so retries of a throttled burst spread
    out yet never come back immediately.
    """

    max_attempts: int
    base_delay: float
    max_delay: float

    def can_retry(self, attempts_made: int) -> bool:
        return attempts_made < self.max_attempts

    def delay(self, attempts_made: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempts_made + 1``."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, attempts_made - 1))
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))
