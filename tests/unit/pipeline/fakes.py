"""An in-memory queue store for actor tests under the autojump clock.

The SQLite store runs in worker threads, and the autojump clock may jump while a thread works,
which would make exact-time assertions flaky. Actor tests therefore use this pure in-memory
implementation of :class:`~sesender.store.base.QueueStore`, the part of the store the pipeline
uses (mypy checks it against that protocol wherever it is handed to the pipeline); the SQLite
store has its own tests, and the end-to-end tests run the two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from sesender.errors import StoreUnavailable
from sesender.models import (
    ClaimBatch,
    ClaimedEmail,
    Content,
    Deferred,
    Failed,
    Outcome,
    Retry,
    Sent,
    Status,
    Stopped,
)
from sesender.store.base import StopResult


@dataclass
class Row:
    request_id: int
    topic_id: str
    email: str
    due_at: int
    status: Status = Status.CREATED
    attempts: int = 0
    message_id: str | None = None
    error: str | None = None


@dataclass
class FakeQueueStore:
    rows: dict[int, Row] = field(default_factory=dict)
    claims: list[tuple[float, int]] = field(default_factory=list)  # (trio time, how many)
    flushes: list[tuple[float, int]] = field(default_factory=list)  # one per batch written
    write_calls: list[int] = field(default_factory=list)  # batches per call, in order
    write_now_ms: list[int] = field(default_factory=list)  # the now_ms of each call
    refuse_after_batches: int | None = None  # the next call of more writes only this many
    unavailable_writes: int = 0  # the next N record_outcomes calls fail
    unavailable_claims: int = 0  # the next N claim_due calls fail
    suppressed: set[str] = field(default_factory=set)
    cancelled: dict[str, int] = field(default_factory=dict)  # topic -> up to request id
    unavailable_stops: int = 0  # the next N stop_topic calls fail
    write_seconds: float = 0.0  # how long each batch's write takes (trio time)

    def add(self, count: int, *, topic: str = "t", due: int = 0) -> list[int]:
        first = len(self.rows) + 1
        ids = list(range(first, first + count))
        for request_id in ids:
            self.rows[request_id] = Row(request_id, topic, f"u{request_id}@example.com", due)
        return ids

    def by_status(self, status: Status) -> list[int]:
        return [r.request_id for r in self.rows.values() if r.status is status]

    def _requeued(self, row: Row) -> Status:
        """Back to Created, unless the topic was cancelled (as the SQLite store does)."""
        up_to = self.cancelled.get(row.topic_id)
        return Status.STOPPED if up_to is not None and row.request_id <= up_to else Status.CREATED

    async def claim_due(self, *, now_ms: int, limit: int) -> ClaimBatch:
        await trio.lowlevel.checkpoint()
        if self.unavailable_claims:
            self.unavailable_claims -= 1
            raise StoreUnavailable("database unavailable: database or disk is full")
        due = sorted(
            (r for r in self.rows.values() if r.status is Status.CREATED and r.due_at <= now_ms),
            key=lambda r: (r.due_at, r.request_id),
        )[:limit]
        emails = []
        suppressed = stopped = 0
        for row in due:
            if self._requeued(row) is Status.STOPPED:
                row.status = Status.STOPPED
                stopped += 1
                continue
            if row.email in self.suppressed:
                row.status = Status.SUPPRESSED
                suppressed += 1
                continue
            row.status = Status.PROCESSED
            emails.append(
                ClaimedEmail(
                    row.request_id,
                    row.topic_id,
                    row.email,
                    Content("Hello", "<html><body>hi</body></html>"),
                    row.attempts,
                )
            )
        self.claims.append((trio.current_time(), len(emails)))
        return ClaimBatch(tuple(emails), suppressed, stopped)

    async def next_due_at(self) -> int | None:
        await trio.lowlevel.checkpoint()
        due = [r.due_at for r in self.rows.values() if r.status is Status.CREATED]
        return min(due) if due else None

    async def record_outcomes(self, outcomes: Sequence[Outcome], *, now_ms: int) -> None:
        await self.record_outcome_batches((outcomes,), now_ms=now_ms)

    async def record_outcome_batches(
        self, batches: Sequence[Sequence[Outcome]], *, now_ms: int
    ) -> int:
        # Like the real stores: one call, each batch its own write (write_seconds each), and a
        # refusal after the first batch returns how many were written.
        self.write_calls.append(len(batches))
        self.write_now_ms.append(now_ms)
        if self.unavailable_writes:
            await trio.sleep(self.write_seconds)
            self.unavailable_writes -= 1
            raise StoreUnavailable("database unavailable: disk is full")
        written = len(batches)
        if self.refuse_after_batches is not None:
            written = min(written, max(1, self.refuse_after_batches))
            self.refuse_after_batches = None
        for batch in batches[:written]:
            await trio.sleep(self.write_seconds)
            self._apply(batch)
        return written

    def _apply(self, outcomes: Sequence[Outcome]) -> None:
        self.flushes.append((trio.current_time(), len(outcomes)))
        for outcome in outcomes:
            row = self.rows[outcome.request_id]
            match outcome:
                case Sent() if row.status is Status.PROCESSED:
                    row.status, row.message_id = Status.SENT, outcome.message_id
                    row.attempts = outcome.attempts
                case Failed() if row.status is Status.PROCESSED:
                    row.status, row.error, row.attempts = (
                        Status.FAILED,
                        outcome.error,
                        outcome.attempts,
                    )
                case Retry() if row.status is Status.PROCESSED:
                    row.status, row.attempts, row.due_at = (
                        self._requeued(row),
                        outcome.attempts,
                        outcome.due_at_ms,
                    )
                case Deferred() if row.status is Status.PROCESSED:
                    row.status, row.due_at = self._requeued(row), outcome.due_at_ms
                case Stopped() if row.status in (Status.CREATED, Status.PROCESSED):
                    row.status = Status.STOPPED

    async def recover_claimed(self, *, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        claimed = [row for row in self.rows.values() if row.status is Status.PROCESSED]
        for row in claimed:
            row.status, row.due_at = self._requeued(row), min(row.due_at, now_ms)
        return len(claimed)

    async def max_request_id(self) -> int:
        await trio.lowlevel.checkpoint()
        return max(self.rows, default=0)

    async def stop_topic(
        self, topic_id: str, *, up_to_id: int, keep: Sequence[int], now_ms: int
    ) -> StopResult:
        await trio.lowlevel.checkpoint()
        if self.unavailable_stops:
            self.unavailable_stops -= 1
            raise StoreUnavailable("database unavailable: disk is full")
        self.cancelled[topic_id] = max(up_to_id, self.cancelled.get(topic_id, 0))
        stopped = 0
        for row in self.rows.values():
            if (
                row.topic_id == topic_id
                and row.request_id <= up_to_id
                and row.request_id not in keep
                and row.status in (Status.CREATED, Status.PROCESSED)
            ):
                row.status = Status.STOPPED
                stopped += 1
        return StopResult(stopped)

    async def cancellations(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return dict(self.cancelled)


def trio_ms() -> int:
    """Wall-clock stand-in driven by the trio clock, so due times and sleeps agree in tests."""
    return int(trio.current_time() * 1000)
