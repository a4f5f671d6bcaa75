"""PostgresStore: the :class:`~sesender.store.base.Store` on PostgreSQL, for several instances.

The same design rule as SQLite: blocking database calls run in worker threads of the store's own
:class:`~actors.ThreadLane` (its capacity limiter), each on a connection of a
``psycopg_pool.ConnectionPool`` sized like the lane, so a thread never waits for a connection.
psycopg errors are translated here, and only here, into :class:`~sesender.errors.StoreError` /
:class:`~sesender.errors.StoreUnavailable`: a lost connection, a server that is down or starting
(``OperationalError``, pool time-outs) is *unavailable* (the API answers 503, the pipeline keeps
its outcomes and retries); a deadlock or serialisation failure is retried here a few times first.

Beyond the single-instance interface it offers what several instances on one database need
(:class:`~sesender.store.base.InstanceStore`): a heartbeat, requeueing a dead instance's claims,
grants from the shared token bucket. The instance id is given at construction; claims carry it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar, TypeVarTuple, Unpack

import psycopg
import psycopg_pool
import trio

from actors import ThreadLane
from sesender.errors import StoreError, StoreUnavailable
from sesender.models import (
    ApiKey,
    ClaimBatch,
    ClickEvent,
    Content,
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
from sesender.store import pg_clicks as clicks
from sesender.store import pg_lifecycle as lifecycle
from sesender.store import pg_queries as queries
from sesender.store import pg_reputation as reputation
from sesender.store import pg_webhooks as webhooks
from sesender.store.base import StopResult
from sesender.store.click_targets import ClickTargets
from sesender.store.health import WriteHealth, WriteHealthStatus
from sesender.store.pg_queries import Connection
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

#: Deadlocks and serialisation failures are retried this many times before giving up.
ROLLBACK_RETRIES = 3
#: The contents cache is cleared when it grows past this many entries (contents are immutable).
CONTENTS_CACHE_SIZE = 10_000


def translate(exc: psycopg.Error) -> StoreError:
    """Map a psycopg error onto our tree (the one boundary where that happens)."""
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        return StoreUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, psycopg.errors.TransactionRollback):
        return StoreUnavailable(f"database busy: {exc}")
    return StoreError(f"database error: {exc}")


def connect(url: str) -> Connection:
    """One autocommit connection (migrations, the CLI, the notification listener)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


class PostgresStore:
    """The PostgreSQL implementation of the store. Build it with :func:`open_postgres_store`."""

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        pool_size: int = 8,
        suppress_after_transient: int = 0,
        connect_timeout: float = 5.0,
        lease_ms: int = 10_000,
        rate_settings: tuple[float, float] | None = None,
    ) -> None:
        self.url = url
        #: (``MAX_SEND_PER_SECOND``, ``SEND_BURST``), written with the heartbeat: instances with
        #: other settings refuse to start beside this one (see :meth:`register`).
        self.rate = queries.InstanceRate(instance_id, *(rate_settings or (None, None)))
        #: how long an instance may go without a heartbeat before its claims are requeued.
        self.lease_ms = lease_ms
        self.instance_id = instance_id
        self.suppress_after_transient = suppress_after_transient
        self.pool_size = pool_size
        self._lane = ThreadLane("postgres", pool_size)
        #: the links of recently submitted click-tracked emails: most redirects need no read.
        self._click_targets = ClickTargets()
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            # A call waits at most this long for a connection: while the server is down the API
            # answers 503 after it, rather than hanging.
            timeout=2.0,
            reconnect_timeout=0,  # keep trying to reconnect for ever (a restart of the server)
            open=False,
            name=f"sesender-{instance_id}",
        )
        #: the heartbeat and the requeueing of dead instances' claims run on a connection and a
        #: thread of their own: a pipeline keeping every pooled connection busy must not delay
        #: the heartbeat past the lease (the others would take this instance for dead).
        self._beat_lane = ThreadLane("postgres-heartbeat", 1)
        self._beat_connection: Connection | None = None
        self._contents: dict[int, Content] = {}
        self._contents_lock = threading.Lock()
        self.write_health = WriteHealth(now_ms=lambda: int(time.time() * 1000))

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> list[int]:
        """Migrate (under the advisory lock) on a connection of its own, then open the pool."""

        def run() -> list[int]:
            with connect(self.url) as connection:
                applied = queries.apply_migrations(connection)
            self._pool.open(wait=True, timeout=30)
            return applied

        try:
            return await self._lane.run(run)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        await self._lane.run(self._pool.close)
        connection, self._beat_connection = self._beat_connection, None
        if connection is not None:
            await self._beat_lane.run(connection.close)

    # -- runners: the one place psycopg errors become StoreErrors ---------------------------

    def _call(self, function: Callable[[Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        attempt = 0
        while True:
            try:
                with self._pool.connection() as connection:
                    return function(connection, *args)
            except psycopg.errors.TransactionRollback:
                attempt += 1
                if attempt > ROLLBACK_RETRIES:
                    raise
                time.sleep(0.005 * attempt)

    async def _write(self, function: Callable[[Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        try:
            result = await self._lane.run(self._call, function, *args)
        except psycopg.Error as exc:
            error = translate(exc)
            if isinstance(error, StoreUnavailable):
                self.write_health.refused(error)
            raise error from exc
        self.write_health.committed()
        return result

    async def _read(self, function: Callable[[Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        try:
            return await self._lane.run(self._call, function, *args)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    # -- the Store interface ----------------------------------------------------------------

    async def submit(
        self,
        submission: Submission,
        *,
        idempotency: NewIdempotencyKey | None = None,
        idempotency_since_ms: int = 0,
    ) -> SubmissionReceipt:
        immediate = submission.due_at_ms <= submission.created_at_ms
        receipt = await self._write(
            queries.submit, submission, idempotency, idempotency_since_ms, immediate
        )
        self._click_targets.remember(receipt.click_ranges)
        return receipt

    async def record_feedback(
        self, items: Sequence[FeedbackItem], *, now_ms: int
    ) -> list[FeedbackReport]:
        return await self._write(
            queries.record_feedback, items, self.suppress_after_transient, now_ms
        )

    async def click_target(self, request_id: int, position: int) -> str | None:
        urls = self._click_targets.links_of(request_id)
        if urls is not None:
            return urls[position] if position < len(urls) else None
        return await self._read(clicks.click_target, request_id, position)

    async def record_click(self, click: ClickEvent, *, now_ms: int) -> RecordedClick | None:
        def record(connection: Connection) -> RecordedClick | None:
            with connection.transaction():
                return clicks.record_click(connection, click)

        return await self._write(record)

    async def topic_links(self, topic_id: str) -> list[LinkStats]:
        return await self._read(clicks.topic_links, topic_id)

    async def put_suppression(self, suppression: Suppression, *, now_ms: int) -> SuppressionEntry:
        return await self._write(queries.put_suppression, suppression, now_ms)

    async def get_suppression(self, email: str) -> SuppressionEntry | None:
        return await self._read(queries.get_suppression, email)

    async def delete_suppression(self, email: str) -> bool:
        return await self._write(queries.delete_suppression, email)

    async def list_suppressions(
        self, *, email_contains: str | None, after: str | None, limit: int
    ) -> list[SuppressionEntry]:
        return await self._read(queries.list_suppressions, email_contains, after, limit)

    async def retry_failed(self, topic_id: str, *, now_ms: int) -> int:
        return await self._write(queries.retry_failed, topic_id, now_ms)

    async def prune(self, *, before_ms: int) -> tuple[int, int]:
        return await self._write(queries.prune_before, before_ms)

    # -- retention and storage (sesender.store.pg_lifecycle) ---------------------------------

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
        return await self._write(
            lifecycle.delete_emails, request_ids, before_ms, range_first_id, now_ms
        )

    async def finish_prune(self, *, now_ms: int) -> None:
        await self._write(lifecycle.finish_prune, now_ms)

    async def reclaim_space(self, *, pages: int) -> tuple[int, int]:
        return (0, 0)  # autovacuum makes deleted rows' space reusable; files do not shrink

    async def storage_stats(self) -> StorageStats:
        return await self._read(lifecycle.storage_stats)

    async def was_pruned(self, request_id: int) -> bool:
        return await self._read(lifecycle.was_pruned, request_id)

    async def disk_free_bytes(self) -> int | None:
        return None  # the database's disk is the server's

    async def find_idempotency(self, key: str, *, since_ms: int) -> IdempotencyRecord | None:
        return await self._read(queries.find_idempotency, key, since_ms)

    async def claim_due(self, *, now_ms: int, limit: int) -> ClaimBatch:
        return await self._write(self._claim, now_ms, limit)

    def _claim(self, connection: Connection, now_ms: int, limit: int) -> ClaimBatch:
        with self._contents_lock:
            if len(self._contents) > CONTENTS_CACHE_SIZE:
                self._contents.clear()
            cache = dict(self._contents)
        batch = queries.claim_due(connection, now_ms, limit, self.instance_id, cache)
        with self._contents_lock:
            self._contents.update(cache)
        return batch

    async def next_due_at(self) -> int | None:
        return await self._read(queries.next_due_at)

    async def record_outcomes(self, outcomes: Sequence[Outcome], *, now_ms: int) -> None:
        await self.record_outcome_batches((outcomes,), now_ms=now_ms)

    async def record_outcome_batches(
        self, batches: Sequence[Sequence[Outcome]], *, now_ms: int
    ) -> int:
        written, unwritten = await self._write(queries.record_outcome_batches, batches, now_ms)
        if unwritten:
            logger.error(
                "%d outcomes could not be recorded; their emails are requeued after the lease",
                unwritten,
            )
        return written

    async def recover_claimed(self, *, now_ms: int) -> int:
        """At start: requeue the claims of instances that are gone (no heartbeat within the
        lease, or no row at all); the claims of live instances are theirs."""
        return await self.requeue_dead_claims(lease_ms=self.lease_ms, now_ms=now_ms, sweep=True)

    async def max_request_id(self) -> int:
        return await self._read(queries.max_request_id)

    async def stop_topic(
        self, topic_id: str, *, up_to_id: int, keep: Sequence[int], now_ms: int
    ) -> StopResult:
        stopped = await self._write(
            queries.stop_topic, topic_id, up_to_id, keep, now_ms, self.instance_id
        )
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

    async def queued_count(self) -> int:
        return await self._read(queries.queued_count)

    async def ping(self) -> None:
        await self._read(queries.ping)

    def write_status(self) -> WriteHealthStatus:
        return self.write_health.status()

    def lanes(self) -> tuple[ThreadLane]:
        return (self._lane,)

    # -- several instances (InstanceStore) --------------------------------------------------

    async def register(self) -> list[queries.InstanceRate]:
        """The first heartbeat, unless live instances have other rate settings: those are
        returned, and nothing is written."""
        return await self._beat(queries.register_instance, self.rate, self.lease_ms)

    async def heartbeat(self) -> bool:
        return await self._beat(queries.heartbeat, self.rate)

    async def requeue_dead_claims(self, *, lease_ms: int, now_ms: int, sweep: bool = True) -> int:
        return await self._beat(queries.requeue_dead_claims, lease_ms, now_ms, sweep)

    async def _beat(self, function: Callable[[Connection, Unpack[Ts]], T], *args: *Ts) -> T:
        def call() -> T:
            connection = self._beat_connection
            if connection is None or connection.closed or connection.broken:
                connection = self._beat_connection = connect(self.url)
            try:
                return function(connection, *args)
            except psycopg.OperationalError:
                connection.close()
                raise

        try:
            return await self._beat_lane.run(call)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def leave(self) -> None:
        await self._write(queries.leave, self.instance_id)

    async def instance_ids(self) -> list[str]:
        return await self._read(queries.instance_ids)

    async def take_tokens(
        self, name: str, count: float, *, rate: float, burst: float, at_most: float | None = None
    ) -> tuple[float, float]:
        return await self._write(
            queries.take_tokens, name, count, rate, burst, count if at_most is None else at_most
        )

    async def notify_pause(self, reason: str) -> None:
        """Tell every instance that the account paused sending (payload: ``<id> <reason>``)."""
        await self._write(
            queries.notify, queries.PAUSE_CHANNEL, f"{self.instance_id} {reason}"[:7000]
        )

    # -- the ApiKeyStore interface (named API keys) ------------------------------------------

    async def create_api_key(self, key: NewApiKey) -> ApiKey:
        return await self._write(queries.create_api_key, key)

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        return await self._read(queries.api_keys, include_revoked)

    async def revoke_api_key(self, key_id: int, *, now_ms: int) -> ApiKey | None:
        return await self._write(queries.revoke_api_key, key_id, now_ms)

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        await self._write(queries.touch_api_keys, used)

    # -- the ReputationStore interface (sesender.store.pg_reputation) ----------------------

    async def reputation_counts(self, *, since_ms: int) -> ReputationCounts:
        return await self._read(reputation.reputation_counts, since_ms)

    async def reputation_holds(self) -> list[ReputationHold]:
        return await self._read(reputation.reputation_holds)

    async def hold_topic(self, topic_id: str, *, reason: str, now_ms: int) -> int:
        return await self._write(reputation.hold_topic, topic_id, reason, now_ms)

    async def resume_topic(self, topic_id: str, *, now_ms: int) -> int | None:
        return await self._write(reputation.resume_topic, topic_id, now_ms)

    async def hold_account(self, *, reason: str, now_ms: int) -> bool:
        return await self._write(reputation.hold_account, reason, now_ms)

    async def resume_account(self, *, now_ms: int) -> bool:
        return await self._write(reputation.resume_account, now_ms)

    # -- webhooks (WebhookAdminStore, WebhookDeliveryStore; pg_webhooks.py) -----------------

    async def create_webhook(self, endpoint: NewEndpoint, *, now_ms: int) -> Endpoint:
        return await self._write(webhooks.create_endpoint, endpoint, now_ms)

    async def list_webhooks(self) -> list[Endpoint]:
        return await self._read(webhooks.list_endpoints)

    async def get_webhook(self, endpoint_id: str) -> Endpoint | None:
        return await self._read(webhooks.get_endpoint, endpoint_id)

    async def update_webhook(
        self, endpoint_id: str, changes: EndpointChanges, *, now_ms: int
    ) -> Endpoint | None:
        return await self._write(webhooks.update_endpoint, endpoint_id, changes, now_ms)

    async def delete_webhook(self, endpoint_id: str) -> bool:
        return await self._write(webhooks.delete_endpoint, endpoint_id)

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, *, keep_until_ms: int, now_ms: int
    ) -> Endpoint | None:
        return await self._write(webhooks.rotate_secret, endpoint_id, secret, keep_until_ms, now_ms)

    async def queue_webhook_event(
        self, endpoint_id: str, *, event_id: str, event_type: str, detail: str | None, now_ms: int
    ) -> bool:
        return await self._write(
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
        return await self._write(webhooks.resend_event, endpoint_id, event_id, now_ms)

    async def webhook_targets(self, *, now_ms: int) -> list[DeliveryTarget]:
        return await self._read(webhooks.delivery_targets, now_ms)

    async def claim_webhook_events(
        self, endpoint_id: str, *, now_ms: int, lease_until_ms: int, limit: int
    ) -> list[PendingEvent]:
        return await self._write(webhooks.claim_events, endpoint_id, now_ms, lease_until_ms, limit)

    async def record_webhook_attempts(
        self, results: Sequence[AttemptResult], *, now_ms: int, disable_after_ms: int
    ) -> list[str]:
        return await self._write(webhooks.record_attempts, results, now_ms, disable_after_ms)

    async def release_webhook_leases(self, *, only_expired: bool = True) -> int:
        """Free only the leases that already ran out (by this machine's clock), whatever
        ``only_expired`` says: the others may be held by live instances delivering those events
        right now. A dead
        instance's leases run out by time and its events are claimed again then (see
        :func:`sesender.store.pg_webhooks.release_expired_leases`)."""
        return await self._write(webhooks.release_expired_leases, int(time.time() * 1000))

    async def prune_webhooks(
        self, *, delivered_before_ms: int, failed_before_ms: int
    ) -> tuple[int, int]:
        return await self._write(webhooks.prune, delivered_before_ms, failed_before_ms)

    # -- the ServiceSecretsStore interface --------------------------------------------------

    async def ensure_service_secret(self, name: str, candidate: bytes, *, now_ms: int) -> bytes:
        return await self._write(queries.ensure_service_secret, name, candidate, now_ms)

    async def service_secret(self, name: str) -> bytes | None:
        return await self._read(queries.service_secret, name)

    async def replace_service_secret(self, name: str, value: bytes, *, now_ms: int) -> None:
        await self._write(queries.replace_service_secret, name, value, now_ms)


@asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    instance_id: str = "local",
    pool_size: int = 8,
    suppress_after_transient: int = 0,
    lease_ms: int = 10_000,
    rate_settings: tuple[float, float] | None = None,
) -> AsyncIterator[PostgresStore]:
    """Open (and migrate) the database, and close the pool on the way out."""
    store = PostgresStore(
        url,
        instance_id=instance_id,
        pool_size=pool_size,
        rate_settings=rate_settings,
        suppress_after_transient=suppress_after_transient,
        lease_ms=lease_ms,
    )
    applied = await store.open()
    if applied:
        logger.info("database migrated", extra={"versions": applied})
    try:
        yield store
    finally:
        with trio.move_on_after(10, shield=True):
            await store.aclose()


def migrate(url: str) -> list[int]:
    """Synchronous migration for ``sesender init-db``."""
    with connect(url) as connection:
        return queries.apply_migrations(connection)


def replace_service_secret_now(url: str, name: str, value: bytes, *, now_ms: int) -> None:
    """Synchronous :meth:`PostgresStore.replace_service_secret` for the CLI (migrates first)."""
    with connect(url) as connection:
        queries.apply_migrations(connection)
        queries.replace_service_secret(connection, name, value, now_ms)
