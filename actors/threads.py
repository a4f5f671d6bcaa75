"""ThreadLane: the one way to run blocking code from trio.

Each kind of blocking work (SQLite writes, SQLite reads, SES calls, file writes) gets its own lane:
a named ``trio.CapacityLimiter`` plus ``trio.to_thread.run_sync``. Separate lanes mean a slow SES
call can never starve the database writer of threads, and the lane's statistics say which kind of
work is queueing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple

import trio

__all__ = ["ThreadLane", "ThreadLaneStatistics"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class ThreadLaneStatistics:
    """A snapshot of one lane: how many calls run, wait and have completed."""

    name: str
    limit: int
    running: int
    waiting: int
    completed: int


class ThreadLane:
    """A named limit on how many threads one kind of blocking work may use at once."""

    def __init__(self, name: str, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"thread lane {name!r} needs a whole-number limit of at least 1, got {limit!r}"
            )
        self.name = name
        self._limiter = trio.CapacityLimiter(limit)
        self._completed = 0

    @property
    def limit(self) -> int:
        """How many threads this lane may use at once."""
        return int(self._limiter.total_tokens)

    async def run_abandonable(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
        """Like :meth:`run`, but on cancellation return at once and let the thread finish alone.

        Only for calls whose result may be lost without harm, such as a long poll that merely
        receives (the messages become visible again later). The abandoned thread still holds its
        lane slot until it returns.
        """
        return await trio.to_thread.run_sync(
            function, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    async def run(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run ``function(*args)`` in a worker thread of this lane and return its result.

        Cancellation while waiting for a thread gives up the call (it never ran); once the thread
        runs, cancellation waits for it to finish (the call is never abandoned), so a write that
        was started is always either completed or raised before control returns. ``completed``
        counts calls that ran, whether they returned or raised.
        """
        ran = False

        def call() -> T:
            nonlocal ran
            ran = True
            return function(*args)

        try:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            if ran:
                self._completed += 1

    def statistics(self) -> ThreadLaneStatistics:
        """Return a frozen snapshot of the lane's use."""
        stats = self._limiter.statistics()
        return ThreadLaneStatistics(
            name=self.name,
            limit=self.limit,
            running=stats.borrowed_tokens,
            waiting=stats.tasks_waiting,
            completed=self._completed,
        )
