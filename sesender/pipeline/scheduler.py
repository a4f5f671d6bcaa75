"""Scheduler: moves due emails from the database into the send pipe.

The database is the queue; the send pipe is only the fast lane in front of the rate limiter.
Immediate and scheduled emails take the same path: both are rows with a ``due_at``. The scheduler
claims at most as many as the pipe has free room for (so ``send_nowait`` never blocks and nothing
claimed waits outside the pipe), then sleeps until the earliest of: the next due email, the polling
interval, or a wake-up (new submission, retries written back, room freed in the pipe, shutdown).

While the database refuses writes (disk full, read-only file) a claim fails: nothing was claimed,
so nothing is lost; the scheduler keeps what it already put in the pipe flowing and claims again
after a backoff, until the database takes writes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors import PipeSender
from sesender.errors import StoreUnavailable
from sesender.models import ClaimedEmail
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.retry import store_retry_delay
from sesender.store.base import QueueStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    claims: int
    claimed: int
    suppressed: int
    wakeups: int
    store_failures: int


class Scheduler:
    """Claims due emails in batches and feeds them to the rate limiter."""

    def __init__(
        self,
        *,
        store: QueueStore,
        send_tx: PipeSender[ClaimedEmail],
        control: PipelineControl,
        interval: float,
        now_ms: Callable[[], int],
        max_batch: int = 1000,
        on_suppressed: Callable[[int], None] | None = None,
        on_stopped: Callable[[int], None] | None = None,
    ) -> None:
        self._on_suppressed = on_suppressed
        #: told how many due emails a claim ended Stopped (their topic was cancelled).
        self._on_stopped = on_stopped
        self._store = store
        self._send_tx = send_tx
        self._control = control
        self._interval = interval
        self._now_ms = now_ms
        self._max_batch = max_batch
        capacity = send_tx.statistics().capacity
        #: claim again only once at least this much room is free: keeps batches large.
        self.low_water_room = max(1, min(max_batch, capacity // 2))
        control.scheduler_low_water = self.low_water_room
        self._claims = 0
        self._claimed = 0
        self._suppressed = 0
        self._wakeups = 0
        self._store_failures = 0  # in a row
        self._store_failures_total = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        control = self._control
        async with self._send_tx:
            task_status.started()
            while not control.stop_sending.is_set():
                control.scheduler_wakeup.clear()
                try:
                    claimed_full_batch = await self._claim_once()
                    if not claimed_full_batch:
                        await self._sleep()
                except StoreUnavailable as exc:
                    await self._back_off(exc)
                    continue
                self._store_failures = 0
                await trio.lowlevel.checkpoint()

    async def _back_off(self, exc: StoreUnavailable) -> None:
        """Wait before claiming again after the database refused (the store logs the episode
        as an error once; this repeats, so it is a warning); a shutdown ends the wait."""
        self._store_failures += 1
        self._store_failures_total += 1
        delay = store_retry_delay(self._store_failures)
        logger.warning(
            "could not claim due emails (%s); trying again in %.1fs",
            exc,
            delay,
            extra={"event": "claim_failed"},
        )
        with trio.move_on_after(delay):
            await self._control.stop_sending.wait()

    async def _claim_once(self) -> bool:
        """Claim what fits; return True when more may be due right now."""
        room = self._send_tx.free_room()
        if room < self.low_water_room:
            return False
        limit = min(room, self._max_batch)
        batch = await self._store.claim_due(now_ms=self._now_ms(), limit=limit)
        self._claims += 1
        self._claimed += len(batch.emails)
        self._suppressed += batch.suppressed
        if batch.suppressed and self._on_suppressed is not None:
            self._on_suppressed(batch.suppressed)
        if batch.stopped and self._on_stopped is not None:
            self._on_stopped(batch.stopped)
        for email in batch.emails:
            self._send_tx.send_nowait(email)
        if batch.emails:
            logger.debug("claimed %d emails", len(batch.emails))
        return len(batch.emails) + batch.suppressed + batch.stopped >= limit

    async def _sleep(self) -> None:
        deadline = trio.current_time() + self._interval
        if self._send_tx.free_room() >= self.low_water_room:
            next_due = await self._store.next_due_at()
            if next_due is not None:
                wait = max(0.0, (next_due - self._now_ms()) / 1000)
                deadline = min(deadline, trio.current_time() + wait)
        if deadline <= trio.current_time():
            return
        with trio.move_on_at(deadline):
            await self._control.scheduler_wakeup.wait()
            self._wakeups += 1

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            claims=self._claims,
            claimed=self._claimed,
            suppressed=self._suppressed,
            wakeups=self._wakeups,
            store_failures=self._store_failures_total,
        )
