"""TokenBucket: hold a send rate exactly, with bursts, without polling.

Why this shape:

* Smooth, continuous refill: ``tokens = min(burst, tokens + rate * elapsed)``. SES quotas are per
  second but enforced smoothly, so a bucket that refills in one lump per second would either
  waste the quota or trip throttling.
* The bucket starts full (``initial=burst``) unless told otherwise: a freshly started service may
  use its burst at once, as SES allows.
* Exact over time. Internally the bucket stores the instant it was (or will be) empty as
  ``anchor + debt / rate``, where ``debt`` is the sum of tokens taken since ``anchor``. The instant
  at which ``count`` more tokens exist is then one expression, ``anchor + (debt + count) / rate``,
  used both to sleep and to check after waking, so no float error accumulates from tick to tick and
  N acquisitions from empty take exactly ``N / rate`` seconds. ``anchor`` moves only when the
  bucket overflows (it is full) or the rate changes.
* Event-driven and fair. Waiters queue first-in first-out. Only the head of the queue sleeps,
  until the computed instant its tokens exist (``trio.sleep_until`` semantics, via a cancel-scope
  deadline); the others wait on an event and are woken in order when they reach the head.
  ``acquire_nowait`` and a fresh ``acquire`` never overtake queued waiters. ``set_rate`` wakes the
  head, which recomputes its instant. A cancelled waiter takes no tokens and hands the head
  position on, so cancellation neither loses nor leaks tokens.

``clock`` must count seconds in trio's time base (the default ``trio.current_time``, or anything
reading the same clock), because waiting sleeps until instants computed from it. Construct the
bucket inside ``trio.run`` when using the default clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["TokenBucket", "TokenBucketStatistics"]


@dataclass(frozen=True, slots=True)
class TokenBucketStatistics:
    """A snapshot of one bucket; ``tokens`` is the current level after refill."""

    rate: float
    burst: float
    tokens: float
    waiting: int
    acquired_total: float


class _Waiter:
    """One queued ``acquire``: how much it needs and the event that tells it to look again."""

    __slots__ = ("count", "wake")

    def __init__(self, count: float) -> None:
        self.count = count
        self.wake = trio.Event()


def _check_rate(rate: float) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(
            f"rate must be a positive finite number of tokens per second, got {rate!r}"
        )


class TokenBucket:
    """Tokens refilled continuously at ``rate`` per second, at most ``burst`` held at once."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = trio.current_time,
        initial: float | None = None,
    ) -> None:
        _check_rate(rate)
        if not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        start = burst if initial is None else initial
        if not 0 <= start <= burst:
            raise ValueError(f"initial must be between 0 and burst ({burst!r}), got {initial!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        # The bucket was empty at anchor + debt / rate; see the module docstring.
        self._anchor = clock()
        self._debt = -float(start)
        self._waiters: deque[_Waiter] = deque()
        self._acquired_total = 0.0

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds."""
        return self._burst

    def set_rate(self, rate: float) -> None:
        """Change the refill rate from now on; tokens already in the bucket are kept.

        The head waiter is woken to recompute when its tokens will exist at the new rate.
        """
        _check_rate(rate)
        now = self._clock()
        tokens = self._tokens_at(now)
        self._anchor = now
        self._debt = -tokens
        self._rate = float(rate)
        if self._waiters:
            self._waiters[0].wake.set()

    def acquire_nowait(self, count: float = 1.0) -> None:
        """Take ``count`` tokens now, or raise ``trio.WouldBlock`` (also while others wait)."""
        self._check_count(count)
        if self._waiters or not self._take(count):
            raise trio.WouldBlock

    async def acquire(self, count: float = 1.0) -> None:
        """Wait, in first-in first-out order, until ``count`` tokens exist, and take them."""
        self._check_count(count)
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._waiters and self._take(count):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(count)
        self._waiters.append(waiter)
        try:
            await self._wait_turn(waiter)
        finally:
            was_head = self._waiters[0] is waiter
            self._waiters.remove(waiter)
            if was_head and self._waiters:
                self._waiters[0].wake.set()

    def statistics(self) -> TokenBucketStatistics:
        """Return a frozen snapshot of the bucket."""
        return TokenBucketStatistics(
            rate=self._rate,
            burst=self._burst,
            tokens=self._tokens_at(self._clock()),
            waiting=len(self._waiters),
            acquired_total=self._acquired_total,
        )

    async def _wait_turn(self, waiter: _Waiter) -> None:
        """Wait to reach the head of the queue, then until the tokens exist, then take them."""
        while True:
            if self._waiters[0] is waiter:
                if self._take(waiter.count):
                    return
                waiter.wake = trio.Event()
                with trio.move_on_at(self._ready_at(waiter.count)):
                    await waiter.wake.wait()
            else:
                waiter.wake = trio.Event()
                await waiter.wake.wait()

    def _check_count(self, count: float) -> None:
        if not 0 < count <= self._burst:
            raise ValueError(f"count must be > 0 and <= burst ({self._burst!r}), got {count!r}")

    def _ready_at(self, count: float) -> float:
        """The instant at which ``count`` tokens will be in the bucket."""
        return self._anchor + (self._debt + count) / self._rate

    def _tokens_at(self, now: float) -> float:
        return max(0.0, min(self._burst, self._rate * (now - self._anchor) - self._debt))

    def _take(self, count: float) -> bool:
        """Take ``count`` tokens if they exist now; the only place tokens leave the bucket."""
        now = self._clock()
        if now < self._ready_at(count):
            return False
        if now >= self._ready_at(self._burst):
            # Full: refill stopped at burst, so restart the accounting from a full bucket now.
            self._anchor = now
            self._debt = -self._burst
        self._debt += count
        self._acquired_total += count
        return True
