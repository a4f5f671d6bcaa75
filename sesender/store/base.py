"""The store's interfaces: one small async Protocol per consumer, and their union.

Each part of the service is typed against exactly what it uses, so a second engine (PostgreSQL for
multi-instance deployments) and the in-memory doubles of the tests implement, and are checked
against, only that:

- :class:`QueueStore`: the send pipeline (scheduler, post-processor, cancellation, start-up);
- :class:`FeedbackStore`: the feedback intake's group commit (opens, SES events, unsubscribes);
- :class:`ApiStore`: the HTTP API's queries and commands;
- :class:`HousekeepingStore`: pruning of deduplication records, old emails (retention) and
  old webhook events;
- :class:`HealthStore`: ``/health``, ``/ready`` and the write-health signal;
- :class:`ApiKeyStore`: named API keys (the HTTP layer's key ring and ``/v1/api-keys``).
- :class:`ReputationStore`: the reputation guard's counters and its durable holds.
- :class:`StorageStore`: the storage figures and whether a missing email was pruned.
- :class:`ClickStore`: click tracking's redirect target, recording a click, per-link counts.
- :class:`WebhookAdminStore`: the webhook endpoints as the API manages them;
- :class:`WebhookDeliveryStore`: the webhook deliverer's queue of events (claim, record);

:class:`Store` is their union, for the composition root that opens the store and hands each
consumer its part; :class:`~sesender.store.sqlite.SqliteStore` implements it.

Only domain records of :mod:`sesender.models` and plain strings cross these interfaces, never a
driver type and never an HTTP body built by the store. Timestamps are Unix milliseconds (UTC),
supplied by the caller so that tests control time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
from sesender.store.health import WriteHealthStatus
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


@dataclass(frozen=True, slots=True)
class StopResult:
    stopped: int


class QueueStore(Protocol):
    """The queue of emails as the send pipeline sees it."""

    async def claim_due(self, *, now_ms: int, limit: int) -> ClaimBatch:
        """Mark up to ``limit`` due emails ``Processed``, oldest first, and return them.

        Emails to suppressed addresses end ``Suppressed``, and emails of cancelled topics end
        ``Stopped``, in the same transaction instead.
        """
        ...

    async def next_due_at(self) -> int | None:
        """When the earliest ``Created`` email falls due, or None when the queue is empty."""
        ...

    async def record_outcomes(self, outcomes: Sequence[Outcome], *, now_ms: int) -> None:
        """Persist a batch of send outcomes in one transaction (per-row fallback on failure)."""
        ...

    async def record_outcome_batches(
        self, batches: Sequence[Sequence[Outcome]], *, now_ms: int
    ) -> int:
        """:meth:`record_outcomes` of each batch, in order, each in its own transaction, in one
        trip to the database thread (the post-processor's batches that filled while the last
        write ran); return how many batches were written, from the first. Raises a
        ``StoreError`` when the first is refused; when a later one is, returns how many came
        before it and the caller writes the rest again. So no batch is written twice: an
        outcome that put its email back in the queue would apply again to the email once it is
        claimed anew."""
        ...

    async def recover_claimed(self, *, now_ms: int) -> int:
        """Requeue emails a previous run left ``Processed``; return how many (at-least-once)."""
        ...

    async def max_request_id(self) -> int:
        """The highest request id stored so far (0 when empty)."""
        ...

    async def stop_topic(
        self, topic_id: str, *, up_to_id: int, keep: Sequence[int], now_ms: int
    ) -> StopResult:
        """Record the topic as cancelled up to ``up_to_id`` and stop its unsent emails with
        id <= ``up_to_id``, except those in ``keep``, in one transaction.

        From then on any outcome that would put such an email back in the queue (a retry, a
        deferral, recovery after a crash) stops it instead, and ``claim_due`` never returns one.
        """
        ...

    async def cancellations(self) -> dict[str, int]:
        """Every cancelled topic with the highest request id its cancellation covers."""
        ...


class FeedbackStore(Protocol):
    """What the feedback intake writes: results, suppressions and bounce counts."""

    async def record_feedback(
        self, items: Sequence[FeedbackItem], *, now_ms: int
    ) -> list[FeedbackReport]:
        """Apply feedback in one transaction: events once per (email, type) with a repeat
        counter, clicks (as :meth:`ClickStore.record_click` records one), suppressions,
        transient-bounce counts; items whose ``source_id`` was seen before change nothing."""
        ...


class ClickStore(Protocol):
    """Click tracking (docs/architecture.md, "Click tracking")."""

    async def click_target(self, request_id: int, position: int) -> str | None:
        """The stored URL of the link at ``position`` of email ``request_id``'s content, when
        that email was sent with click tracking; None otherwise. A read: the redirect answers
        from it while the click itself is recorded by a group commit."""
        ...

    async def record_click(self, click: ClickEvent, *, now_ms: int) -> RecordedClick | None:
        """Record one click in its own transaction: the email's ``Click`` result (once per
        email in the topic's counts), whether it is the email's first click on that link, and
        the topic's per-link counters. None, nothing written, for an unknown email or link."""
        ...

    async def topic_links(self, topic_id: str) -> list[LinkStats]:
        """The topic's tracked links with unique and total clicks, most clicked first."""
        ...


class ApiStore(Protocol):
    """The HTTP API's queries and commands."""

    async def submit(
        self,
        submission: Submission,
        *,
        idempotency: NewIdempotencyKey | None = None,
        idempotency_since_ms: int = 0,
    ) -> SubmissionReceipt:
        """Store every email of the submission (and its idempotency record) in one transaction.

        When the key already has a record created at or after ``idempotency_since_ms``, nothing
        is stored and the receipt carries that record in ``replayed`` (checked inside the same
        transaction, so two concurrent requests with one key store the emails once). Otherwise
        the key's response is ``idempotency.response_for(first_request_id)``, saved as given and
        returned in the receipt's ``response``.
        """
        ...

    async def find_idempotency(self, key: str, *, since_ms: int) -> IdempotencyRecord | None:
        """The record for ``key`` stored at or after ``since_ms``, if any."""
        ...

    async def request_detail(self, request_id: int) -> RequestDetail | None: ...

    async def topic_stats(self, topic_id: str) -> TopicStats: ...

    async def recent_topics(self, *, limit: int) -> list[TopicSummary]:
        """The most recently submitted topics, newest first, with their counts."""
        ...

    async def count_sent_since(self, since_ms: int) -> int: ...

    async def queued_count(self) -> int:
        """Emails waiting or claimed (``Created`` + ``Processed``)."""
        ...

    async def retry_failed(self, topic_id: str, *, now_ms: int) -> int:
        """Requeue the topic's emails that failed with ``exhausted`` or ``config`` (not permanent
        rejections); return how many."""
        ...

    async def put_suppression(
        self, suppression: Suppression, *, now_ms: int
    ) -> SuppressionEntry: ...

    async def delete_suppression(self, email: str) -> bool: ...

    async def list_suppressions(
        self, *, email_contains: str | None, after: str | None, limit: int
    ) -> list[SuppressionEntry]: ...


class HousekeepingStore(Protocol):
    async def prune(self, *, before_ms: int) -> tuple[int, int]:
        """Forget deduplication records older than ``before_ms``: (SNS ids, idempotency keys)."""
        ...

    async def lowest_request_id(self) -> int:
        """The lowest stored request id (0 when none): where a pruning run starts."""
        ...

    async def find_prunable(self, *, before_ms: int, after_id: int, scan_limit: int) -> PruneScan:
        """Look at up to ``scan_limit`` emails with ids above ``after_id`` and return those in a
        final state last changed before ``before_ms`` (a read: it holds up no write)."""
        ...

    async def delete_emails(
        self,
        *,
        request_ids: Sequence[int],
        before_ms: int,
        range_first_id: int | None,
        now_ms: int,
    ) -> PruneBatch:
        """One short transaction of retention: delete those of the emails that are (still) final
        and last changed before ``before_ms``, with their per-email rows and any content no
        email uses any more, and remember their ids as pruned. Counters (topic statistics, sent
        counts) are left as they are."""
        ...

    async def finish_prune(self, *, now_ms: int) -> None:
        """Record the end of a pruning run (the storage figures' ``last_prune_at``)."""
        ...

    async def reclaim_space(self, *, pages: int) -> tuple[int, int]:
        """Give up to ``pages`` free pages back to the file system in one short step:
        (pages freed, free pages left). An engine that reclaims by itself returns (0, 0)."""
        ...

    async def prune_webhooks(
        self, *, delivered_before_ms: int, failed_before_ms: int
    ) -> tuple[int, int]:
        """Forget webhook events delivered before ``delivered_before_ms``, failed events and
        attempts older than ``failed_before_ms``: (events, attempts)."""
        ...


class WebhookAdminStore(Protocol):
    """Webhook endpoints as the API (and through it the CLI and dashboard) manage them.

    Creating, changing, enabling or disabling an endpoint also sets what the event triggers see
    (its subscription rows), in the same transaction: events are written from the next commit
    on, and a disabled endpoint gets none.
    """

    async def create_webhook(self, endpoint: NewEndpoint, *, now_ms: int) -> Endpoint: ...

    async def list_webhooks(self) -> list[Endpoint]: ...

    async def get_webhook(self, endpoint_id: str) -> Endpoint | None: ...

    async def update_webhook(
        self, endpoint_id: str, changes: EndpointChanges, *, now_ms: int
    ) -> Endpoint | None: ...

    async def delete_webhook(self, endpoint_id: str) -> bool: ...

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, *, keep_until_ms: int, now_ms: int
    ) -> Endpoint | None:
        """Sign with ``secret`` from now on, and with the current secret too until
        ``keep_until_ms``."""
        ...

    async def queue_webhook_event(
        self, endpoint_id: str, *, event_id: str, event_type: str, detail: str | None, now_ms: int
    ) -> bool:
        """Queue one event for one endpoint (the test event); False if it does not exist."""
        ...

    async def webhook_attempts(
        self, endpoint_id: str, *, since_ms: int, limit: int
    ) -> list[AttemptRecord]: ...

    async def webhook_events(
        self, endpoint_id: str, *, state: EventState | None, limit: int
    ) -> list[EventSummary]: ...

    async def resend_webhook_event(self, endpoint_id: str, event_id: str, *, now_ms: int) -> bool:
        """Queue a finished event again, due now, with its event id; False if no such event
        is finished (unknown, or still pending)."""
        ...


class WebhookDeliveryStore(Protocol):
    """The webhook deliverer's queue: claim under a lease, record attempts in bulk."""

    async def webhook_targets(self, *, now_ms: int) -> list[DeliveryTarget]:
        """Every enabled endpoint with the secrets it signs with at ``now_ms``."""
        ...

    async def claim_webhook_events(
        self, endpoint_id: str, *, now_ms: int, lease_until_ms: int, limit: int
    ) -> list[PendingEvent]:
        """Lease up to ``limit`` due events of one endpoint (none leased by another deliverer
        whose lease still runs)."""
        ...

    async def record_webhook_attempts(
        self, results: Sequence[AttemptResult], *, now_ms: int, disable_after_ms: int
    ) -> list[str]:
        """Record attempts and their events' new states in one transaction; return the ids of
        endpoints this disabled (410 Gone, or failing for ``disable_after_ms``)."""
        ...

    async def release_webhook_leases(self, *, only_expired: bool = False) -> int:
        """At start, free the leases a previous run left: every lease with SQLite when this
        process is the only deliverer (the service delivering itself); only leases that already
        ran out with PostgreSQL, or with ``only_expired`` (``sesender deliver-webhooks``, of which
        several may run: the others' leases belong to live deliverers, and a dead one's run out
        by time). Returns how many."""
        ...


class HealthStore(Protocol):
    async def ping(self) -> None:
        """Raise StoreError unless the database answers a read."""
        ...

    def write_status(self) -> WriteHealthStatus:
        """Whether the database takes writes, as the latest writes found (a full disk or a
        read-only file leaves reads, and so ``ping``, working)."""
        ...


class StorageStore(Protocol):
    async def storage_stats(self) -> StorageStats:
        """Sizes, rows per main table, emails pruned, last prune and last backup."""
        ...

    async def was_pruned(self, request_id: int) -> bool:
        """Whether the email with this id (which is not stored) was deleted by retention."""
        ...

    async def disk_free_bytes(self) -> int | None:
        """Free bytes on the file system holding the database; None when this process cannot
        tell (a database server elsewhere)."""
        ...


class ApiKeyStore(Protocol):
    """Named API keys, kept as digests. The key ring reads every valid key about once a second
    (the set is small), so a revocation reaches every instance sharing the database."""

    async def create_api_key(self, key: NewApiKey) -> ApiKey: ...

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        """Every key (without revoked ones unless asked), oldest first."""
        ...

    async def revoke_api_key(self, key_id: int, *, now_ms: int) -> ApiKey | None:
        """Revoke the key (again: no change); None when no key has this id."""
        ...

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        """Record (key id, Unix ms) as the keys' last use, unless they were used later."""
        ...


class HttpStore(
    ApiStore, WebhookAdminStore, HealthStore, ApiKeyStore, StorageStore, ClickStore, Protocol
):
    """What the HTTP layer is given: the API's queries and commands, the webhook endpoints, the
    health checks, the API keys, the storage figures and click tracking."""


class ReputationStore(Protocol):
    """The reputation guard's view: counters over a window, and holds that outlive a restart."""

    async def reputation_counts(self, *, since_ms: int) -> ReputationCounts:
        """Sends, permanent bounces and complaints of the emails sent from ``since_ms`` on,
        account-wide and for each topic with a bounce among them; a scope an operator resumed
        counts only what was sent after the resume. Cost: a sum over the window's counters."""
        ...

    async def reputation_holds(self) -> list[ReputationHold]:
        """The holds in force (account and topics), oldest first."""
        ...

    async def hold_topic(self, topic_id: str, *, reason: str, now_ms: int) -> int:
        """Hold the topic in one transaction: its queued emails end ``Held``, and any email of it
        claimed or requeued later too. Return how many were held now, -1 if already held."""
        ...

    async def resume_topic(self, topic_id: str, *, now_ms: int) -> int | None:
        """Lift the hold and requeue the topic's ``Held`` emails; how many, None if not held."""
        ...

    async def hold_account(self, *, reason: str, now_ms: int) -> bool:
        """Record that all sending is held; False when it already was."""
        ...

    async def resume_account(self, *, now_ms: int) -> bool:
        """Lift the account hold; False when there was none."""
        ...


class Store(
    QueueStore,
    FeedbackStore,
    ApiStore,
    HousekeepingStore,
    HealthStore,
    ApiKeyStore,
    ReputationStore,
    StorageStore,
    ClickStore,
    WebhookAdminStore,
    WebhookDeliveryStore,
    Protocol,
):
    """Everything: what the composition root opens, closes and hands out in parts."""

    async def aclose(self) -> None: ...
