"""PostProcessor: persists send outcomes in batches.

Outcomes arrive a group at a time (one pipe item per send call, or per group the rate limiter
held back). A batch is written when it holds ``flush_size`` outcomes or when its oldest outcome
has waited ``flush_interval`` seconds, whichever comes first (an arriving group is never split,
so a batch may hold a little more than ``flush_size``): one transaction per batch, not per email.

Two tasks share the work so that the next write does not wait for the next batch to be
received: one writes while the other gathers the next batches (up to :data:`CHAINED_BATCHES`
full ones; what comes beyond that waits in the outcome pipe). With one task, the database thread
sat idle after each write until the event loop, busy composing, had run the task again, received
the next groups one checkpoint each and only then started the next write; in a trace of the
throughput benchmark the outcome pipe stayed full with hundreds of sends waiting to hand over
their outcomes, so that turn-taking set the pace of the whole pipeline.

The batches that filled while a write ran go to the database thread together, in one call
(``record_outcome_batches``), each still its own transaction, in order. Why: at full speed every
write also cost a hand-over between the event loop and the database thread (the loop starts the
next job and the thread needs the GIL to begin it, while the loop composes), and those hand-overs
left the database thread idle a third of the time while the outcome pipe stayed full
(docs/performance.md, "Issue 13, tenth pass"); one hand-over per few batches gives that time to
writing. When outcomes come slowly, one batch is ready at a time and goes alone, as before.

If the database refuses writes (read-only, disk full) the batch is kept and retried with backoff,
never dropped; meanwhile the next batch fills, the bounded outcome pipe fills and the pipeline
slows to a stop instead of losing anything. After a write it releases the emails from the
"handed over" register and wakes the scheduler when retries or deferred emails went back to the
queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from actors import PipeReceiver
from sesender.errors import StoreError, StoreUnavailable
from sesender.models import Deferred, Outcome, Retry
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.retry import store_retry_delay
from sesender.store.base import QueueStore

logger = logging.getLogger(__name__)

#: Full batches gathered while a write runs, at most, and so written in one call: enough to
#: keep the database thread writing between hand-overs, few enough that a claim waiting behind
#: them waits a few milliseconds (about 1 ms per batch of 100 here).
CHAINED_BATCHES = 4


@dataclass(frozen=True, slots=True)
class PostProcessorStatistics:
    flushes: int
    flushed: int
    pending: int
    write_failures: int
    largest_batch: int


class PostProcessor:
    def __init__(
        self,
        *,
        store: QueueStore,
        outcome_rx: PipeReceiver[Sequence[Outcome]],
        control: PipelineControl,
        now_ms: Callable[[], int],
        flush_size: int,
        flush_interval: float,
        on_flush: Callable[[Sequence[Outcome]], None] | None = None,
    ) -> None:
        self._store = store
        self._outcome_rx = outcome_rx
        self._control = control
        self._now_ms = now_ms
        self.flush_size = flush_size
        self.flush_interval = flush_interval
        self._on_flush = on_flush
        #: full batches waiting for the writer, oldest first (at most CHAINED_BATCHES).
        self._full: list[list[Outcome]] = []
        #: the batch being gathered, and when it is due (read only while it holds outcomes).
        self._batch: list[Outcome] = []
        self._due_at = math.inf
        self._input_ended = False
        self._changed = trio.Event()
        self._flushes = 0
        self._flushed = 0
        self._write_failures = 0
        self._largest = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._outcome_rx, trio.open_nursery() as nursery:
            nursery.start_soon(self._write_batches)
            task_status.started()
            try:
                await self._gather()
            finally:
                self._input_ended = True
                self._notify()
        # Leaving the nursery waited for the writer to write what was left.

    def _notify(self) -> None:
        """Wake the other task: a batch grew, was taken, or the input ended."""
        self._changed.set()
        self._changed = trio.Event()

    def _add(self, outcomes: Sequence[Outcome]) -> None:
        """Add an arriving group to the batch being gathered (never split: a batch may end a
        little over ``flush_size``); a batch that reached ``flush_size`` is full and waits for
        the writer."""
        if not self._batch:
            self._due_at = trio.current_time() + self.flush_interval
        self._batch.extend(outcomes)
        if len(self._batch) >= self.flush_size:
            self._full.append(self._batch)
            self._batch = []

    def _room(self) -> bool:
        return len(self._full) < CHAINED_BATCHES

    async def _gather(self) -> None:
        """Receive outcomes into batches, up to :data:`CHAINED_BATCHES` full ones waiting (more
        waits in the pipe: that is the backpressure), while the writer writes."""
        receive_nowait = self._outcome_rx.receive_nowait
        while True:
            while not self._room():
                await self._changed.wait()
            try:
                outcomes = await self._outcome_rx.receive()
            except trio.EndOfChannel:
                return
            self._add(outcomes)
            # What already waits in the pipe joins at once, without a checkpoint per group.
            while self._room():
                try:
                    outcomes = receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._add(outcomes)
            self._notify()

    def _partial_due(self) -> bool:
        return bool(self._batch) and (self._input_ended or trio.current_time() >= self._due_at)

    async def _write_batches(self) -> None:
        """Take what is due (the full batches, and the one being gathered once it is old enough
        or the input ended) and write it; return once the input ended and everything is
        written."""
        while True:
            while not (self._full or self._partial_due()):
                if self._input_ended and not self._batch:
                    return
                with trio.move_on_at(self._due_at if self._batch else math.inf):
                    await self._changed.wait()
            batches, self._full = self._full, []
            if self._partial_due():
                batches.append(self._batch)
                self._batch = []
            self._notify()
            await self._flush(batches)

    async def _flush(self, batches: list[list[Outcome]]) -> None:
        """Write ``batches``, in order, until every one is written: a refused call is retried
        with backoff, and a call that wrote only the first few is followed by one for the rest
        (a written batch is never written again; see ``record_outcome_batches``)."""
        failures = 0
        while batches:
            try:
                written = await self._store.record_outcome_batches(batches, now_ms=self._now_ms())
            except StoreError as exc:
                self._write_failures += 1
                failures += 1
                delay = store_retry_delay(failures)
                # A refused write is a warning here: the store logs each episode of those once as
                # an error (and Sentry takes that one), where this repeats every few seconds.
                logger.log(
                    logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR,
                    "could not persist %d outcomes (%s); retrying in %.1fs",
                    sum(map(len, batches)),
                    exc,
                    delay,
                    extra={"event": "outcome_write_failed"},
                )
                await trio.sleep(delay)
                continue
            self._written(batches[:written])
            batches = batches[written:]

    def _written(self, batches: list[list[Outcome]]) -> None:
        """What follows a write: the emails leave the "handed over" register, the scheduler is
        woken when some went back to the queue, and the flush is reported."""
        handed_over = self._control.handed_over
        requeued = False
        for batch in batches:
            self._flushes += 1
            self._flushed += len(batch)
            self._largest = max(self._largest, len(batch))
            for outcome in batch:
                handed_over.pop(outcome.request_id, None)
                requeued = requeued or isinstance(outcome, Retry | Deferred)
            if self._on_flush is not None:
                self._on_flush(batch)
        if requeued:
            self._control.wake_scheduler()

    def statistics(self) -> PostProcessorStatistics:
        return PostProcessorStatistics(
            flushes=self._flushes,
            flushed=self._flushed,
            pending=len(self._batch) + sum(map(len, self._full)),
            write_failures=self._write_failures,
            largest_batch=self._largest,
        )
