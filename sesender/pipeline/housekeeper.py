"""Housekeeper: forgets what cannot matter any more, every ``HOUSEKEEPING_INTERVAL_SECONDS``.

Three jobs per run:

- **Deduplication records.** SNS message ids are kept to drop redeliveries (SNS retries for at most
  an hour; SQS may hold a message for days), idempotency keys for 24 hours. Records older than
  ``dedup_retention_ms`` (7 days: far beyond both windows) are deleted in one short write.
- **Retention** (``RETENTION_DAYS``; 0 keeps everything). Emails in a final state whose last change
  is older than that are deleted with their per-email rows. A reader walks the emails
  (``scan_limit`` per step, holding up no write); the writer deletes what it found in
  transactions of ``batch_size`` emails, so that no write holds the database long enough for the
  API or the pipeline to notice: the store's single writer lane serves the waiting writes between
  two batches. Every step is followed by a rest as long as the step took (``busy_share`` 0.5):
  pruning a backlog of a million emails takes minutes more, and sending and the API keep their
  share of a loaded machine (measured in docs/performance.md, "Retention"). Statistics survive
  (see :mod:`sesender.store.sqlite_lifecycle`). Then the freed pages go back to the file system,
  ``vacuum_pages`` per step, so the file shrinks.
- **Webhook events**: delivered ones once ``webhook_retention_ms`` has passed since their delivery
  (the queue table would otherwise hold every event ever sent), failed ones and the attempt log
  after ``dedup_retention_ms`` (the attempts of the last 7 days can be listed, and a failed event
  resent, until then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from sesender.errors import StoreError
from sesender.store.base import HousekeepingStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class PruneReport:
    """One retention run: what went, and how long it took (wall seconds)."""

    emails: int = 0
    results: int = 0
    contents: int = 0
    batches: int = 0
    pages_freed: int = 0
    seconds: float = 0.0


class Housekeeper:
    def __init__(
        self,
        *,
        store: HousekeepingStore,
        now_ms: Callable[[], int],
        interval: float = 3600.0,
        dedup_retention_ms: int = 7 * DAY_MS,
        email_retention_ms: int = 0,
        batch_size: int = 500,
        scan_limit: int = 5000,
        vacuum_pages: int = 256,
        busy_share: float = 0.5,
        webhook_retention_ms: int = 3 * DAY_MS,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._interval = interval
        self._dedup_retention_ms = dedup_retention_ms
        self._email_retention_ms = email_retention_ms
        self._batch_size = batch_size
        self._scan_limit = scan_limit
        self._vacuum_pages = vacuum_pages
        #: rest after each step, per second of work: at most ``busy_share`` of the time busy.
        self._rest_per_busy = (1 - busy_share) / busy_share
        self.pruned = (0, 0)
        self.last_report = PruneReport()
        self._webhook_retention_ms = webhook_retention_ms
        self.pruned_webhooks = (0, 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            await self.run_once()

    async def run_once(self) -> None:
        """The jobs once; a store error skips the rest of this run (the next run retries)."""
        try:
            now = self._now_ms()
            self.pruned = await self._store.prune(before_ms=now - self._dedup_retention_ms)
            self.pruned_webhooks = await self._store.prune_webhooks(
                delivered_before_ms=now - self._webhook_retention_ms,
                failed_before_ms=now - self._dedup_retention_ms,
            )
            if any(self.pruned):
                logger.info(
                    "forgot %d SNS message ids and %d idempotency keys",
                    *self.pruned,
                    extra={"event": "pruned"},
                )
            if any(self.pruned_webhooks):
                logger.info(
                    "forgot %d finished webhook events and %d webhook attempts",
                    *self.pruned_webhooks,
                    extra={"event": "pruned_webhooks"},
                )
            if self._email_retention_ms > 0:
                self.last_report = await self.prune_emails()
        except StoreError as exc:
            logger.warning("housekeeping skipped: %s", exc)

    async def _paced(self, step: Awaitable[T]) -> T:
        """Run one step, then rest in proportion to how long it took: pruning never takes more
        than its share of the writer (and of the CPU) from sending and the API, however slow
        the machine is, and what waits for the writer goes in between."""
        started = trio.current_time()
        result = await step
        await trio.sleep((trio.current_time() - started) * self._rest_per_busy)
        return result

    async def prune_emails(self) -> PruneReport:
        """Delete final emails older than the retention, batch by batch, then reclaim space."""
        started = time.monotonic()
        before_ms = self._now_ms() - self._email_retention_ms
        after_id = max(0, await self._store.lowest_request_id() - 1)
        range_first: int | None = None
        pending: list[int] = []
        emails = results = contents = batches = 0
        done = False
        while not done or pending:
            if not done:
                scan = await self._paced(
                    self._store.find_prunable(
                        before_ms=before_ms, after_id=after_id, scan_limit=self._scan_limit
                    )
                )
                pending.extend(scan.candidates)
                after_id, done = scan.next_after_id, scan.done
            while len(pending) >= self._batch_size or (done and pending):
                chunk, pending = pending[: self._batch_size], pending[self._batch_size :]
                batch = await self._paced(
                    self._store.delete_emails(
                        request_ids=chunk,
                        before_ms=before_ms,
                        range_first_id=range_first,
                        now_ms=self._now_ms(),
                    )
                )
                batches += 1
                emails += batch.emails
                results += batch.results
                contents += batch.contents
                range_first = batch.range_first_id
        freed = 0
        while True:
            step, left = await self._paced(self._store.reclaim_space(pages=self._vacuum_pages))
            freed += step
            if step == 0 or left == 0:
                break
        await self._store.finish_prune(now_ms=self._now_ms())
        report = PruneReport(
            emails=emails,
            results=results,
            contents=contents,
            batches=batches,
            pages_freed=freed,
            seconds=time.monotonic() - started,
        )
        if emails or freed:
            logger.info(
                "retention: deleted %d emails, %d results and %d contents; freed %d pages",
                emails,
                results,
                contents,
                freed,
                extra={
                    "event": "emails_pruned",
                    "emails": emails,
                    "results": results,
                    "contents": contents,
                    "batches": batches,
                    "pages_freed": freed,
                    "seconds": round(report.seconds, 3),
                },
            )
        return report
