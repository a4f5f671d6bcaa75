"""SqliteStore: the :class:`~sesender.store.base.Store` on SQLite, driven through thread lanes.

It implements every consumer's protocol of :mod:`sesender.store.base` (the queue, the feedback
intake, the API, housekeeping, health) in one class over one database.

One writer connection on a lane of size 1 serialises every write, so SQLite never sees two
writers and never answers "database is locked" to ourselves; reads run on their own lane with a
small pool of connections in WAL mode, so a long statistics query never waits for a write and a
write never waits for it. ``sqlite3`` errors are translated here, and only here, into
:class:`~sesender.errors.StoreError` / :class:`~sesender.errors.StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar, TypeVarTuple, Unpack

import trio

from actors import ThreadLane
from sesender.errors import StoreError, StoreUnavailable
from sesender.models import (
    ApiKey,
    ClaimBatch,
    ClickEvent,
    FeedbackItem,
    FeedbackReport,
    IdempotencyRecord,
    LinkStats,
    NewApiKey,
    NewIdempotencyKey,
    Outcome,
    PruneBatch,
    PruneScan,
    RecordedClick,
    ReputationCounts,
    ReputationHold,
    RequestDetail,
    StorageStats,
    Submission,
    SubmissionReceipt,
    Suppression,
    SuppressionEntry,
    TopicStats,
    TopicSummary,
)
from sesender.store import sqlite_clicks as clicks
from sesender.store import sqlite_lifecycle as lifecycle
from sesender.store import sqlite_queries as queries
from sesender.store import sqlite_reputation as reputation
from sesender.store import sqlite_webhooks as webhooks
from sesender.store.base import StopResult
from sesender.store.click_targets import ClickTargets
from sesender.store.health import WriteHealth, WriteHealthStatus
from sesender.webhooks.models import (
    AttemptRecord,
    AttemptResult,
    DeliveryTarget,
    Endpoint,
    EndpointChanges,
    EventState,
    EventSummary,
    NewEndpoint,
    PendingEvent,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: sqlite3 messages that mean "the database cannot take writes right now" rather than a bug.
_UNAVAILABLE_MARKERS = (
    "readonly",
    "read-only",
    "disk is full",
    "database or disk is full",
    "disk i/o error",
    "database is locked",
    "unable to open",
)


def translate(exc: sqlite3.Error) -> StoreError:
    """Map a sqlite3 error onto our tree (the one boundary where that happens)."""
    message = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        marker in message for marker in _UNAVAILABLE_MARKERS
    ):
        return StoreUnavailable(f"database unavailable: {exc}")
    return StoreError(f"database error: {exc}")


class ReaderPool:
    """A few reader connections handed out one per thread call (sqlite3 connections are not
    safe for concurrent use, but are fine to pass between threads one at a time)."""

    def __init__(self, factory: Callable[[], sqlite3.Connection], size: int) -> None:
        self._factory = factory
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._size = size

    def run(self, function: Callable[[sqlite3.Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._factory()
            with self._lock:
                self._all.append(connection)
        try:
            return function(connection, *args)
        finally:
            with self._lock:
                self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
            self._idle.clear()


class SqliteStore:
    """The SQLite implementation of the store. Build it with :func:`open_sqlite_store`."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        readers: int = 4,
        suppress_after_transient: int = 0,
    ) -> None:
        self.path = path
        #: SUPPRESS_AFTER_TRANSIENT_BOUNCES (0: transient bounces are counted, never suppress).
        self.suppress_after_transient = suppress_after_transient
        self._busy_timeout = busy_timeout
        self._writer_lane = ThreadLane("sqlite-writer", 1)
        #: the links of recently submitted click-tracked emails: most redirects need no read.
        self._click_targets = ClickTargets()
        self._reader_lane = ThreadLane("sqlite-reader", readers)
        self._writer: sqlite3.Connection | None = None
        self._readers = ReaderPool(self._open_reader, readers)
        #: whether writes work, learned from every write (see :mod:`sesender.store.health`).
        self.write_health = WriteHealth(now_ms=lambda: int(time.time() * 1000))

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> list[int]:
        """Open the writer, apply pending migrations; return the versions applied."""
        return await self._write(self._open_writer)

    def _open_writer(self) -> list[int]:
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = queries.connect(str(self.path), busy_timeout=self._busy_timeout)
        applied = queries.apply_migrations(connection)
        switch_to_incremental_vacuum(connection, self.path)
        self._writer = connection
        return applied

    def _open_reader(self) -> sqlite3.Connection:
        return queries.connect(str(self.path), busy_timeout=self._busy_timeout)

    async def aclose(self) -> None:
        def close_all() -> None:
            if self._writer is not None:
                with contextlib.suppress(sqlite3.Error):  # best effort on the way out
                    self._writer.execute("PRAGMA optimize")
                self._writer.close()
                self._writer = None
            self._readers.close()

        await self._writer_lane.run(close_all)

    # -- runners: the one place sqlite3 errors become StoreErrors ---------------------------

    async def _write(self, function: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        try:
            return await self._writer_lane.run(function, *args)
        except sqlite3.Error as exc:
            error = translate(exc)
            if isinstance(error, StoreUnavailable):
                self.write_health.refused(error)
            raise error from exc

    async def _with_writer(
        self, function: Callable[[sqlite3.Connection, Unpack[Ts]], T], *args: *Ts
    ) -> T:
        def call() -> T:
            writer = self._writer
            if writer is None:
                raise StoreError("the store is not open")
            changes = writer.total_changes
            result = function(writer, *args)
            if writer.total_changes != changes:
                self.write_health.committed()
            return result

        return await self._write(call)

    async def _read(self, function: Callable[[sqlite3.Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        try:
            return await self._reader_lane.run(self._readers.run, function, *args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    # -- the Store interface (every consumer's protocol) -----------------------------------

    async def submit(
        self,
        submission: Submission,
        *,
        idempotency: NewIdempotencyKey | None = None,
        idempotency_since_ms: int = 0,
    ) -> SubmissionReceipt:
        receipt = await self._with_writer(
            queries.submit, submission, idempotency, idempotency_since_ms
        )
        self._click_targets.remember(receipt.click_ranges)
        return receipt

    async def record_feedback(
        self, items: Sequence[FeedbackItem], *, now_ms: int
    ) -> list[FeedbackReport]:
        return await self._with_writer(
            queries.record_feedback, items, self.suppress_after_transient, now_ms
        )

    async def put_suppression(self, suppression: Suppression, *, now_ms: int) -> SuppressionEntry:
        return await self._with_writer(queries.put_suppression, suppression, now_ms)

    async def get_suppression(self, email: str) -> SuppressionEntry | None:
        return await self._read(queries.get_suppression, email)

    async def delete_suppression(self, email: str) -> bool:
        return await self._with_writer(queries.delete_suppression, email)

    async def list_suppressions(
        self, *, email_contains: str | None, after: str | None, limit: int
    ) -> list[SuppressionEntry]:
        return await self._read(queries.list_suppressions, email_contains, after, limit)

    async def retry_failed(self, topic_id: str, *, now_ms: int) -> int:
        return await self._with_writer(queries.retry_failed, topic_id, now_ms)

    async def prune(self, *, before_ms: int) -> tuple[int, int]:
        return await self._with_writer(queries.prune_before, before_ms)

    async def lowest_request_id(self) -> int:
        return await self._read(lifecycle.lowest_request_id)

    async def find_prunable(self, *, before_ms: int, after_id: int, scan_limit: int) -> PruneScan:
        return await self._read(lifecycle.find_prunable, before_ms, after_id, scan_limit)

    async def delete_emails(
        self,
        *,
        request_ids: Sequence[int],
        before_ms: int,
        range_first_id: int | None,
        now_ms: int,
    ) -> PruneBatch:
        return await self._with_writer(
            lifecycle.delete_emails, request_ids, before_ms, range_first_id, now_ms
        )

    async def finish_prune(self, *, now_ms: int) -> None:
        await self._with_writer(lifecycle.finish_prune, now_ms)

    async def reclaim_space(self, *, pages: int) -> tuple[int, int]:
        return await self._with_writer(lifecycle.incremental_vacuum, pages)

    async def storage_stats(self) -> StorageStats:
        return await self._read(lifecycle.storage_stats, self.path)

    async def was_pruned(self, request_id: int) -> bool:
        return await self._read(lifecycle.was_pruned, request_id)

    async def disk_free_bytes(self) -> int | None:
        # statvfs is file-system I/O: a worker thread, never the event loop (a stuck network
        # mount would otherwise freeze /ready and /metrics, and everything else with them).
        return await trio.to_thread.run_sync(lifecycle.disk_free_bytes, self.path)

    async def find_idempotency(self, key: str, *, since_ms: int) -> IdempotencyRecord | None:
        return await self._read(queries.find_idempotency, key, since_ms)

    async def claim_due(self, *, now_ms: int, limit: int) -> ClaimBatch:
        return await self._with_writer(queries.claim_due, now_ms, limit)

    async def next_due_at(self) -> int | None:
        return await self._read(queries.next_due_at)

    async def record_outcomes(self, outcomes: Sequence[Outcome], *, now_ms: int) -> None:
        await self.record_outcome_batches((outcomes,), now_ms=now_ms)

    async def record_outcome_batches(
        self, batches: Sequence[Sequence[Outcome]], *, now_ms: int
    ) -> int:
        written, unwritten = await self._with_writer(
            queries.record_outcome_batches, batches, now_ms
        )
        if unwritten:
            logger.error(
                "%d outcomes could not be recorded; they will be retried after restart", unwritten
            )
        return written

    async def recover_claimed(self, *, now_ms: int) -> int:
        return await self._with_writer(queries.recover_claimed, now_ms)

    async def max_request_id(self) -> int:
        return await self._read(queries.max_request_id)

    async def stop_topic(
        self, topic_id: str, *, up_to_id: int, keep: Sequence[int], now_ms: int
    ) -> StopResult:
        stopped = await self._with_writer(queries.stop_topic, topic_id, up_to_id, keep, now_ms)
        return StopResult(stopped=stopped)

    async def cancellations(self) -> dict[str, int]:
        return await self._read(queries.cancellations)

    async def topic_stats(self, topic_id: str) -> TopicStats:
        return await self._read(queries.topic_stats, topic_id)

    async def recent_topics(self, *, limit: int) -> list[TopicSummary]:
        return await self._read(queries.recent_topics, limit)

    async def count_sent_since(self, since_ms: int) -> int:
        return await self._read(queries.count_sent_since, since_ms)

    async def request_detail(self, request_id: int) -> RequestDetail | None:
        return await self._read(queries.request_detail, request_id)

    async def click_target(self, request_id: int, position: int) -> str | None:
        urls = self._click_targets.links_of(request_id)
        if urls is not None:
            return urls[position] if position < len(urls) else None
        return await self._read(clicks.click_target, request_id, position)

    async def record_click(self, click: ClickEvent, *, now_ms: int) -> RecordedClick | None:
        def record(connection: sqlite3.Connection) -> RecordedClick | None:
            with queries.transaction(connection):
                return clicks.record_click(connection, click)

        return await self._with_writer(record)

    async def topic_links(self, topic_id: str) -> list[LinkStats]:
        return await self._read(clicks.topic_links, topic_id)

    async def queued_count(self) -> int:
        return await self._read(queries.queued_count)

    async def ping(self) -> None:
        await self._read(queries.ping)

    def write_status(self) -> WriteHealthStatus:
        return self.write_health.status()

    # -- webhooks (WebhookAdminStore, WebhookDeliveryStore; sqlite_webhooks.py) -------------

    async def create_webhook(self, endpoint: NewEndpoint, *, now_ms: int) -> Endpoint:
        return await self._with_writer(webhooks.create_endpoint, endpoint, now_ms)

    async def list_webhooks(self) -> list[Endpoint]:
        return await self._read(webhooks.list_endpoints)

    async def get_webhook(self, endpoint_id: str) -> Endpoint | None:
        return await self._read(webhooks.get_endpoint, endpoint_id)

    async def update_webhook(
        self, endpoint_id: str, changes: EndpointChanges, *, now_ms: int
    ) -> Endpoint | None:
        return await self._with_writer(webhooks.update_endpoint, endpoint_id, changes, now_ms)

    async def delete_webhook(self, endpoint_id: str) -> bool:
        return await self._with_writer(webhooks.delete_endpoint, endpoint_id)

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, *, keep_until_ms: int, now_ms: int
    ) -> Endpoint | None:
        return await self._with_writer(
            webhooks.rotate_secret, endpoint_id, secret, keep_until_ms, now_ms
        )

    async def queue_webhook_event(
        self, endpoint_id: str, *, event_id: str, event_type: str, detail: str | None, now_ms: int
    ) -> bool:
        return await self._with_writer(
            webhooks.add_event, endpoint_id, event_id, event_type, detail, now_ms
        )

    async def webhook_attempts(
        self, endpoint_id: str, *, since_ms: int, limit: int
    ) -> list[AttemptRecord]:
        return await self._read(webhooks.list_attempts, endpoint_id, since_ms, limit)

    async def webhook_events(
        self, endpoint_id: str, *, state: EventState | None, limit: int
    ) -> list[EventSummary]:
        return await self._read(webhooks.list_events, endpoint_id, state, limit)

    async def resend_webhook_event(self, endpoint_id: str, event_id: str, *, now_ms: int) -> bool:
        return await self._with_writer(webhooks.resend_event, endpoint_id, event_id, now_ms)

    async def webhook_targets(self, *, now_ms: int) -> list[DeliveryTarget]:
        return await self._read(webhooks.delivery_targets, now_ms)

    async def claim_webhook_events(
        self, endpoint_id: str, *, now_ms: int, lease_until_ms: int, limit: int
    ) -> list[PendingEvent]:
        return await self._with_writer(
            webhooks.claim_events, endpoint_id, now_ms, lease_until_ms, limit
        )

    async def record_webhook_attempts(
        self, results: Sequence[AttemptResult], *, now_ms: int, disable_after_ms: int
    ) -> list[str]:
        return await self._with_writer(webhooks.record_attempts, results, now_ms, disable_after_ms)

    async def release_webhook_leases(self, *, only_expired: bool = False) -> int:
        expired_before_ms = int(time.time() * 1000) if only_expired else None
        return await self._with_writer(webhooks.release_leases, expired_before_ms)

    async def prune_webhooks(
        self, *, delivered_before_ms: int, failed_before_ms: int
    ) -> tuple[int, int]:
        return await self._with_writer(webhooks.prune, delivered_before_ms, failed_before_ms)

    def lanes(self) -> tuple[ThreadLane, ThreadLane]:
        """The writer and reader lanes, for statistics and metrics."""
        return self._writer_lane, self._reader_lane

    # -- the ApiKeyStore interface --------------------------------------------------------------

    async def create_api_key(self, key: NewApiKey) -> ApiKey:
        return await self._with_writer(queries.create_api_key, key)

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        return await self._read(queries.api_keys, include_revoked)

    async def revoke_api_key(self, key_id: int, *, now_ms: int) -> ApiKey | None:
        return await self._with_writer(queries.revoke_api_key, key_id, now_ms)

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        await self._with_writer(queries.touch_api_keys, used)

    # -- the ReputationStore interface (sesender.store.sqlite_reputation) ------------------

    async def reputation_counts(self, *, since_ms: int) -> ReputationCounts:
        return await self._read(reputation.reputation_counts, since_ms)

    async def reputation_holds(self) -> list[ReputationHold]:
        return await self._read(reputation.reputation_holds)

    async def hold_topic(self, topic_id: str, *, reason: str, now_ms: int) -> int:
        return await self._with_writer(reputation.hold_topic, topic_id, reason, now_ms)

    async def resume_topic(self, topic_id: str, *, now_ms: int) -> int | None:
        return await self._with_writer(reputation.resume_topic, topic_id, now_ms)

    async def hold_account(self, *, reason: str, now_ms: int) -> bool:
        return await self._with_writer(reputation.hold_account, reason, now_ms)

    async def resume_account(self, *, now_ms: int) -> bool:
        return await self._with_writer(reputation.resume_account, now_ms)

    # -- the ServiceSecretsStore interface (sesender.store.service_secrets) -----------------

    async def ensure_service_secret(self, name: str, candidate: bytes, *, now_ms: int) -> bytes:
        return await self._with_writer(queries.ensure_service_secret, name, candidate, now_ms)

    async def service_secret(self, name: str) -> bytes | None:
        return await self._read(queries.service_secret, name)

    async def replace_service_secret(self, name: str, value: bytes, *, now_ms: int) -> None:
        await self._with_writer(queries.replace_service_secret, name, value, now_ms)


@asynccontextmanager
async def open_sqlite_store(
    path: Path,
    *,
    busy_timeout: float = 30.0,
    readers: int = 4,
    suppress_after_transient: int = 0,
) -> AsyncIterator[SqliteStore]:
    """Open (and migrate) the database, and close it on the way out."""
    store = SqliteStore(
        path,
        busy_timeout=busy_timeout,
        readers=readers,
        suppress_after_transient=suppress_after_transient,
    )
    applied = await store.open()
    if applied:
        logger.info("database migrated", extra={"path": str(path), "versions": applied})
    try:
        yield store
    finally:
        # Closing is the last write (PRAGMA optimize): shielded, bounded, even when cancelled.
        with trio.move_on_after(10, shield=True):
            await store.aclose()


def migrate(path: Path, *, busy_timeout: float = 30.0) -> list[int]:
    """Synchronous migration for ``sesender init-db`` (no trio needed)."""
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = queries.connect(str(path), busy_timeout=busy_timeout)
    try:
        applied = queries.apply_migrations(connection)
        switch_to_incremental_vacuum(connection, path)
        return applied
    finally:
        connection.close()


def switch_to_incremental_vacuum(connection: sqlite3.Connection, path: Path) -> None:
    """Give a database made without incremental auto-vacuum that mode (one ``VACUUM``, logged
    with its duration), so pruning can shrink the file. Not fatal when it fails (a full disk:
    the ``VACUUM`` needs about the file's size free): pruning still works, the file does not
    shrink, and the next start tries again."""
    started = time.monotonic()
    try:
        switched = lifecycle.ensure_incremental_auto_vacuum(connection)
    except sqlite3.Error as exc:
        logger.warning(
            "could not switch %s to incremental auto-vacuum (pruning will not shrink the file): %s",
            path,
            exc,
            extra={"event": "auto_vacuum_failed"},
        )
        return
    if switched:
        logger.info(
            "switched the database to incremental auto-vacuum (one VACUUM)",
            extra={
                "event": "auto_vacuum_enabled",
                "path": str(path),
                "seconds": round(time.monotonic() - started, 3),
            },
        )


def replace_service_secret_now(
    path: Path, name: str, value: bytes, *, now_ms: int, busy_timeout: float = 30.0
) -> None:
    """Synchronous :meth:`SqliteStore.replace_service_secret` for the CLI (migrates first, so
    ``sesender reset-api-key`` works on a new database too)."""
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = queries.connect(str(path), busy_timeout=busy_timeout)
    try:
        queries.apply_migrations(connection)
        queries.replace_service_secret(connection, name, value, now_ms)
    finally:
        connection.close()
