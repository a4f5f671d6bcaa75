"""SharedRate: the account's send rate shared by every instance on one PostgreSQL database.

The mechanism: one token bucket kept in a database row (``rate_buckets``), refilled at
``MAX_SEND_PER_SECOND`` by the *database* clock and capped at ``SEND_BURST``. Before a batch goes
to the provider, the rate limiter of whichever instance holds it takes the batch's tokens from
that row in one short ``UPDATE ... RETURNING`` (one round trip, the row lock held for that
statement only). All or nothing: when the row holds too few, nothing is taken and the instance
waits for the deficit's refill time, then asks again.

Why this one: the sum over all instances can never exceed what one bucket lets through (R per
second plus the burst), whatever the number of instances; and an idle instance takes nothing, so
the busy ones get the whole rate (a fixed split R/N would leave the idle share unused).

Tokens are taken just before the send. When the rate allows more than a batch within
:data:`AHEAD` seconds (``R x AHEAD`` >= the batch, i.e. from 2,500 per second for batches of 50),
one round trip takes up to ``R x AHEAD`` tokens (never more than the burst), and the batches that
follow use them without asking again, for at most :data:`EXPIRY` seconds; what is left then is
dropped, never spent late (only unused headroom of the rate is lost). So an instance holds at
most ``R x AHEAD`` tokens taken but not spent, and N instances send at most ``N x R x AHEAD``
more in a second than the bucket granted in it (2 % of the rate per instance); below 2,500 per
second every batch asks for exactly its own tokens, as before, and a grant is spent at once.

Cost: one database round trip per batch (batches carry up to ``min(SEND_BURST, 50)`` emails),
plus one per refused attempt. At R = 200 (burst 20) that is about 10 to 20 round trips a second
for all instances together, at R = 2,000 (burst 50 per batch) about 40 to 80; from 2,500 per
second on, about one per instance and ``R x AHEAD`` tokens sent (at most ``1 / AHEAD`` a
second), however fast the instance sends (without it, an instance sending 10,000 a second took
the row 200 times a second, and every instance queued for that one row lock).
"""

from __future__ import annotations

import logging
import math
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
#: Tokens taken ahead of need: at most what the rate refills in this many seconds (and never more
#: than the burst), so what an instance holds unspent is a small share of the rate.
AHEAD = 0.02
#: How long tokens taken ahead may wait for their batch (seconds, from the moment they were
#: asked for); then they are dropped.
EXPIRY = 0.25


class TokenStore(Protocol):
    async def take_tokens(
        self, name: str, count: float, *, rate: float, burst: float, at_most: float | None = None
    ) -> tuple[float, float]:
        """Take between ``count`` and ``at_most`` tokens, or none: (taken, there were)."""
        ...


@dataclass(frozen=True, slots=True)
class SharedRateStatistics:
    #: round trips that took tokens
    grants: int
    refusals: int
    store_failures: int
    #: batches served from tokens taken ahead, without a round trip
    ahead: int = 0
    #: tokens taken ahead that expired unused
    expired: float = 0.0


class SharedRate:
    def __init__(self, *, store: TokenStore, rate: Callable[[], float], burst: float) -> None:
        self._store = store
        self._rate = rate
        self._burst = burst
        self._grants = 0
        self._refusals = 0
        self._failures = 0
        #: tokens taken ahead, usable until ``_ahead_until`` (trio clock)
        self._ahead = 0.0
        self._ahead_until = -math.inf
        self._ahead_used = 0
        self._expired = 0.0

    async def acquire(self, count: int) -> None:
        """Return once ``count`` tokens were taken from the shared bucket, or from those taken
        ahead and not yet expired (cancellable: a cancelled wait takes nothing; a cancelled
        round trip may have taken them, which only ever lowers the rate)."""
        if self._ahead >= count and trio.current_time() <= self._ahead_until:
            self._ahead -= count
            self._ahead_used += 1
            return
        if self._ahead:
            self._expired += self._ahead
            self._ahead = 0.0
        failures = 0
        while True:
            rate = self._rate()
            # Ahead only what the rate refills in AHEAD seconds, never beyond the burst.
            at_most = max(count, min(rate * AHEAD, self._burst))
            asked_at = trio.current_time()
            try:
                taken, available = await self._store.take_tokens(
                    ACCOUNT_BUCKET, count, rate=rate, burst=self._burst, at_most=at_most
                )
            except StoreError as exc:
                failures += 1
                self._failures += 1
                delay = store_retry_delay(failures)
                logger.warning("shared rate unavailable (%s); waiting %.1fs", exc, delay)
                await trio.sleep(delay)
                continue
            if taken >= count:
                self._grants += 1
                self._ahead = taken - count
                self._ahead_until = asked_at + EXPIRY
                return
            self._refusals += 1
            await trio.sleep(max(MIN_WAIT, (count - available) / rate))

    def statistics(self) -> SharedRateStatistics:
        return SharedRateStatistics(
            grants=self._grants,
            refusals=self._refusals,
            store_failures=self._failures,
            ahead=self._ahead_used,
            expired=self._expired,
        )
