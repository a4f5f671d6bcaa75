"""ResultWriter: group commits for result events (opens now, SES events from SNS and SQS).

Open pixels and SNS webhooks arrive as many small concurrent requests. Writing each in its own
transaction would cost one fsync-ish commit per hit; instead callers put their events on a bounded
pipe and this actor writes whatever has gathered in one transaction. A caller that must not answer
before its event is durable (the SNS webhook: "200 only after commit") passes a ``committed``
event and waits for it; the open pixel does not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from actors import PipeReceiver, PipeSender
from sesender.errors import StoreError, StoreUnavailable
from sesender.models import FeedbackItem, FeedbackReport
from sesender.store.base import FeedbackStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ResultWrite:
    """Feedback to record, and optionally a way for the caller to learn it was committed."""

    item: FeedbackItem
    committed: trio.Event | None = None
    report: FeedbackReport | None = None
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
        store: FeedbackStore,
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
                    while len(batch) < self._max_batch:
                        try:
                            batch.append(await self._write_rx.receive())
                        except trio.EndOfChannel:
                            break
                await self._commit(batch)

    async def _commit(self, batch: list[ResultWrite]) -> None:
        items = [write.item for write in batch]
        try:
            reports = await self._store.record_feedback(items, now_ms=self._now_ms())
        except StoreError as exc:
            self._failures += 1
            # Refused writes are logged once per episode by the store; a waiting caller (the
            # webhook: 503, SNS retries) or the pixel (the open is not counted) handles the rest.
            logger.log(
                logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR,
                "could not record %d feedback items: %s",
                len(items),
                exc,
            )
            for write in batch:
                write.error = exc
        else:
            self._commits += 1
            self._events += sum(len(item.events) for item in items)
            self._matched += sum(report.matched for report in reports)
            for write, report in zip(batch, reports, strict=True):
                write.report = report
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


async def write_and_wait(write_tx: PipeSender[ResultWrite], item: FeedbackItem) -> FeedbackReport:
    """Queue feedback and return once it is committed (raise StoreError if it was not)."""
    committed = trio.Event()
    write = ResultWrite(item=item, committed=committed)
    await write_tx.send(write)
    await committed.wait()
    if write.error is not None:
        raise write.error
    assert write.report is not None
    return write.report
