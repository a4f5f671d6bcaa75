"""ResultWriter: group commits for result events (opens now, SES events from SNS and SQS).

Open pixels and SNS webhooks arrive as many small concurrent requests. Writing each in its own
transaction would cost one fsync-ish commit per hit; instead callers put their events on a bounded
pipe and this actor writes whatever has gathered in one transaction. A caller that must not answer
before its event is durable (the SNS webhook: "200 only after commit") passes a ``committed``
event and waits for it; the open pixel does not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from actors import PipeReceiver, PipeSender
from sesender.errors import StoreError
from sesender.models import ResultEvent
from sesender.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ResultWrite:
    """Events to record, and optionally a way for the caller to learn they were committed."""

    events: Sequence[ResultEvent]
    committed: trio.Event | None = None
    matched: int = 0
    error: StoreError | None = field(default=None)


@dataclass(frozen=True, slots=True)
class ResultWriterStatistics:
    commits: int
    events: int
    matched: int
    failures: int


class ResultWriter:
    def __init__(
        self,
        *,
        store: Store,
        write_rx: PipeReceiver[ResultWrite],
        now_ms: Callable[[], int],
        max_batch: int = 500,
        gather_interval: float = 0.005,
    ) -> None:
        self._store = store
        self._write_rx = write_rx
        self._now_ms = now_ms
        self._max_batch = max_batch
        self._gather_interval = gather_interval
        self._commits = 0
        self._events = 0
        self._matched = 0
        self._failures = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._write_rx:
            task_status.started()
            while True:
                try:
                    first = await self._write_rx.receive()
                except trio.EndOfChannel:
                    return
                batch = [first]
                # Let concurrent callers join this commit for a few milliseconds.
                with trio.move_on_after(self._gather_interval):
                    while sum(len(w.events) for w in batch) < self._max_batch:
                        try:
                            batch.append(await self._write_rx.receive())
                        except trio.EndOfChannel:
                            break
                await self._commit(batch)

    async def _commit(self, batch: list[ResultWrite]) -> None:
        events = [event for write in batch for event in write.events]
        try:
            matched = await self._store.record_results(events, now_ms=self._now_ms())
        except StoreError as exc:
            self._failures += 1
            logger.error("could not record %d result events: %s", len(events), exc)
            for write in batch:
                write.error = exc
        else:
            self._commits += 1
            self._events += len(events)
            self._matched += matched
            # Per-write match counts are not tracked separately: a write learns the batch's.
            for write in batch:
                write.matched = matched
        for write in batch:
            if write.committed is not None:
                write.committed.set()

    def statistics(self) -> ResultWriterStatistics:
        return ResultWriterStatistics(
            commits=self._commits,
            events=self._events,
            matched=self._matched,
            failures=self._failures,
        )


async def write_and_wait(write_tx: PipeSender[ResultWrite], events: Sequence[ResultEvent]) -> None:
    """Queue events and return once they are committed (raise StoreError if they were not)."""
    write = ResultWrite(events=events, committed=trio.Event())
    await write_tx.send(write)
    assert write.committed is not None
    await write.committed.wait()
    if write.error is not None:
        raise write.error
