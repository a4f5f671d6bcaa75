"""SharedRate: the account's send rate shared by every instance on one PostgreSQL database.

The mechanism: one token bucket kept in a database row (``rate_buckets``), refilled at
``MAX_SEND_PER_SECOND`` by the *database* clock and capped at ``SEND_BURST``. Before a batch goes
to the provider, the rate limiter of whichever instance holds it takes the batch's tokens from
that row in one short ``UPDATE ... RETURNING`` (one round trip, the row lock held for that
statement only). All or nothing: when the row holds too few, nothing is taken and the instance
waits for the deficit's refill time, then asks again.

Why this one: the sum over all instances can never exceed what one bucket lets through (R per
second plus the burst), whatever the number of instances; and an idle instance takes nothing, so
the busy ones get the whole rate (a fixed split R/N would leave the idle share unused). Tokens
are taken just before the send, never hoarded, so a grant is spent at once.

Cost: one database round trip per batch (batches carry up to ``min(SEND_BURST, 50)`` emails),
plus one per refused attempt. At R = 200 (burst 20) that is about 10 to 20 round trips a second
for all instances together, at R = 2,000 (burst 50 per batch) about 40 to 80.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from sesender.errors import StoreError
from sesender.pipeline.retry import store_retry_delay

logger = logging.getLogger(__name__)

#: The bucket's name in ``rate_buckets`` (one account per database).
ACCOUNT_BUCKET = "account"
#: The shortest wait after a refusal: a round trip costs about that much anyway.
MIN_WAIT = 0.002


class TokenStore(Protocol):
    async def take_tokens(
        self, name: str, count: float, *, rate: float, burst: float
    ) -> tuple[bool, float]: ...


@dataclass(frozen=True, slots=True)
class SharedRateStatistics:
    grants: int
    refusals: int
    store_failures: int


class SharedRate:
    def __init__(self, *, store: TokenStore, rate: Callable[[], float], burst: float) -> None:
        self._store = store
        self._rate = rate
        self._burst = burst
        self._grants = 0
        self._refusals = 0
        self._failures = 0

    async def acquire(self, count: int) -> None:
        """Return once ``count`` tokens were taken from the shared bucket (cancellable: a
        cancelled wait takes nothing; a cancelled round trip may have taken them, which only
        ever lowers the rate)."""
        failures = 0
        while True:
            rate = self._rate()
            try:
                granted, available = await self._store.take_tokens(
                    ACCOUNT_BUCKET, count, rate=rate, burst=self._burst
                )
            except StoreError as exc:
                failures += 1
                self._failures += 1
                delay = store_retry_delay(failures)
                logger.warning("shared rate unavailable (%s); waiting %.1fs", exc, delay)
                await trio.sleep(delay)
                continue
            if granted:
                self._grants += 1
                return
            self._refusals += 1
            await trio.sleep(max(MIN_WAIT, (count - available) / rate))

    def statistics(self) -> SharedRateStatistics:
        return SharedRateStatistics(
            grants=self._grants, refusals=self._refusals, store_failures=self._failures
        )
