"""Domain records shared by the store, the pipeline and the HTTP API.

They are plain frozen dataclasses with no SQLite (or any other driver) type in them, so a second
store implementation (PostgreSQL) can produce the same records.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


class Status(enum.IntEnum):
    """An email's lifecycle. Numbers are the original service's; names are API-visible."""

    CREATED = 0  # stored, waiting for its due time
    PROCESSED = 1  # claimed by the pipeline
    SENT = 2
    FAILED = 3
    STOPPED = 4  # cancelled before it reached the provider
    SUPPRESSED = 5  # the address is on the suppression list
    HELD = 6  # its topic was stopped by the reputation guard; resuming the topic requeues it

    @property
    def label(self) -> str:
        """The API name: ``Created``, ``Processed``, ..."""
        return self.name.capitalize()


class FailureKind(enum.StrEnum):
    """Why an email failed; decides whether ``POST /topics/{id}/retry`` may requeue it."""

    PERMANENT = "permanent"  # the provider rejected this message: never retried
    EXHAUSTED = "exhausted"  # transient errors until MAX_ATTEMPTS ran out: retryable
    CONFIG = "config"  # the service could not build the message: retryable after a fix


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message of a submission: a content sent to a list of already validated addresses.

    ``data`` is set for a template (see :mod:`sesender.templating`): one mapping of merge-field
    values per address, in the same order. None: the content is sent exactly as given.
    ``track_opens`` / ``track_clicks`` are decided at submission (the message's own choice, else
    the service's setting then); ``links`` are the URLs of the content's tracked links by
    position (:func:`sesender.links.link_urls`), given when ``track_clicks`` is on.
    """

    topic_id: str
    subject: str
    body: str
    emails: tuple[str, ...]
    data: tuple[Mapping[str, str], ...] | None = None
    #: the message's ``from`` (None: the default sender, AWS_SES_FROM_EMAIL), already checked
    #: against ALLOWED_SENDERS and the key's senders; stored with the content.
    sender: str | None = None
    #: the message's ``reply_to`` address, if any.
    reply_to: str | None = None
    track_opens: bool = True
    track_clicks: bool = False
    links: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Submission:
    """A whole ``POST /v1/messages``: stored in one transaction or not at all."""

    messages: tuple[NewMessage, ...]
    due_at_ms: int
    created_at_ms: int
    #: the named API key that submitted it (None: ``API_KEY`` or the generated key), stored on
    #: every email so a ``send`` key reads back only its own messages.
    api_key_id: int | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A stored response for an ``Idempotency-Key``: replayed while the body digest matches."""

    key: str
    body_digest: bytes
    response: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class NewIdempotencyKey:
    """An ``Idempotency-Key`` to record with a submission.

    The response a replay returns names the first request id, which only the store's transaction
    assigns; so the caller passes ``response_for``, which the store calls inside that transaction
    with the id (None when nothing was stored) and saves the string it returns, as it is. It must
    be quick and pure: it runs on the store's writer.
    """

    key: str
    body_digest: bytes
    created_at_ms: int
    response_for: Callable[[int | None], str]


@dataclass(frozen=True, slots=True)
class SubmissionReceipt:
    stored: int
    first_request_id: int | None
    #: set instead when the idempotency key was already used within the window: nothing stored.
    replayed: IdempotencyRecord | None = None
    #: with an idempotency key: the response as stored for replays (to be returned verbatim).
    response: str | None = None
    #: the click-tracked messages' emails and their links, for the redirect's in-memory targets
    #: (:mod:`sesender.store.click_targets`).
    click_ranges: tuple[ClickRange, ...] = ()


@dataclass(frozen=True, slots=True)
class ClickRange:
    """The emails ``first_id`` .. ``last_id`` (consecutive ids, one message of a submission) were
    stored with click tracking, and their content's tracked links are ``urls``, by position."""

    first_id: int
    last_id: int
    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """Something that happened to a sent email (an open, an SES event), to be recorded once per
    email and type. Matched by the provider's ``message_id`` first, else by ``request_id``."""

    event_type: str
    occurred_at_ms: int
    request_id: int | None = None
    message_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """A click on a link of a sent email, to be recorded by the store's ``record_click``.

    From sesender's own redirect: ``request_id`` and the link's ``position`` in the email's
    content (the store knows its URL). From an SES ``Click`` event: ``message_id`` (and the
    request id tag when SES echoed it) and the ``url`` SES reports.
    """

    occurred_at_ms: int
    request_id: int | None = None
    message_id: str | None = None
    position: int | None = None
    url: str | None = None
    user_agent: str | None = None
    source: str = "sesender"


@dataclass(frozen=True, slots=True)
class RecordedClick:
    """What the store recorded for a click: the email, its topic, the link, whether it was this
    email's first click on that link (a unique click), and the time since the email was sent."""

    request_id: int
    topic_id: str
    url: str
    unique: bool
    delay_ms: int | None


@dataclass(frozen=True, slots=True)
class LinkStats:
    """One link of a topic: clicks counted once per email (unique) and every click (total)."""

    url: str
    unique_clicks: int
    total_clicks: int


@dataclass(frozen=True, slots=True)
class Content:
    subject: str
    body: str
    #: the ``from`` of the message (None: the default sender) and its ``reply_to``.
    sender: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedEmail:
    """An email taken out of the queue by the scheduler, content joined once per batch."""

    request_id: int
    topic_id: str
    email: str
    content: Content
    attempts: int  # attempts already made before this claim
    #: the merge-field values stored for this email when its content is a template, else None.
    data: Mapping[str, str] | None = None
    #: whether the email carries the open pixel; None (emails accepted before the choice was
    #: stored): as OPEN_TRACKING_ENABLED says.
    track_opens: bool | None = None
    #: whether the email's links are rewritten for click tracking.
    track_clicks: bool = False


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    emails: tuple[ClaimedEmail, ...]
    suppressed: int  # claimed but ended Suppressed in the same transaction
    #: due but ended Stopped in the same transaction (their topic was cancelled).
    stopped: int = 0


# Outcomes travel as values from the sender pool to the post-processor.


@dataclass(frozen=True, slots=True)
class Sent:
    request_id: int
    message_id: str
    attempts: int
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Failed:
    request_id: int
    error: str
    kind: FailureKind
    attempts: int


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: back to ``Created``, due again at ``due_at_ms``."""

    request_id: int
    error: str
    attempts: int
    due_at_ms: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not attempted (sending paused, or shut down mid-queue): back to ``Created`` untouched."""

    request_id: int
    due_at_ms: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """Dropped by cancellation before reaching the provider."""

    request_id: int


Outcome = Sent | Failed | Retry | Deferred | Stopped


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address that must not be mailed again (stored lower-cased).

    Either ``email`` is given, or ``request_id`` names the email whose address is meant (one-click
    unsubscribe knows only its token's request id).
    """

    reason: str  # bounce, complaint, unsubscribe, manual, transient-bounces
    source: str  # what caused it: an SNS message id, "api", "one-click"...
    email: str | None = None
    request_id: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    email: str
    reason: str
    source: str
    detail: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One unit of feedback written in a group commit: events to record, addresses to suppress,
    transient bounces to count. ``source_id`` (an SNS MessageId) makes it idempotent: an item
    whose source was already processed changes nothing."""

    events: tuple[ResultEvent, ...] = ()
    clicks: tuple[ClickEvent, ...] = ()
    suppressions: tuple[Suppression, ...] = ()
    transient_bounces: tuple[str, ...] = ()
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    matched: int = 0
    duplicates: int = 0
    suppressed: int = 0

    @staticmethod
    def total(reports: Sequence[FeedbackReport]) -> FeedbackReport:
        return FeedbackReport(
            matched=sum(r.matched for r in reports),
            duplicates=sum(r.duplicates for r in reports),
            suppressed=sum(r.suppressed for r in reports),
        )


@dataclass(frozen=True, slots=True)
class TopicStats:
    request_counts: dict[str, int]
    result_counts: dict[str, int]
    #: every click on the topic's links (``result_counts["Click"]`` counts emails clicked).
    total_clicks: int = 0


@dataclass(frozen=True, slots=True)
class TopicSummary:
    topic_id: str
    created_at_ms: int
    updated_at_ms: int
    stats: TopicStats


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_type: str
    count: int
    first_at_ms: int
    last_at_ms: int
    detail: str | None


@dataclass(frozen=True, slots=True)
class RequestDetail:
    request_id: int
    topic_id: str
    email: str
    status: Status
    attempts: int
    message_id: str | None
    error: str | None
    failure_kind: FailureKind | None
    created_at_ms: int
    updated_at_ms: int
    due_at_ms: int
    sent_at_ms: int | None
    events: tuple[EventRecord, ...]
    #: the named API key that submitted the email (None: ``API_KEY`` or the generated key).
    api_key_id: int | None = None
    #: the email's ``from`` when it is not the default sender.
    sender: str | None = None


class Scope(enum.StrEnum):
    """What a named API key may do (see sesender/http/scopes.py for the route table)."""

    SEND = "send"  # POST messages, read its own messages
    READ = "read"  # statistics, topics, messages, the suppression list, the dashboard
    ADMIN = "admin"  # everything, keys included


@dataclass(frozen=True, slots=True)
class NewApiKey:
    name: str
    scopes: frozenset[Scope]
    #: the senders (addresses or domains) the key may use; None: any allowed sender.
    senders: tuple[str, ...] | None
    prefix: str
    #: SHA-256 of the key: the key itself is never stored.
    digest: bytes
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A named API key as stored (its digest, never the key)."""

    id: int
    name: str
    scopes: frozenset[Scope]
    senders: tuple[str, ...] | None
    prefix: str
    digest: bytes
    created_at_ms: int
    last_used_at_ms: int | None
    revoked_at_ms: int | None


# The reputation guard (sesender.pipeline.reputation_guard).


class HoldScope(enum.StrEnum):
    """What the reputation guard holds: all sending, or one topic."""

    ACCOUNT = "account"
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class GuardCounts:
    """Sends, permanent bounces and complaints over the guard's window."""

    sends: int = 0
    bounces: int = 0
    complaints: int = 0

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0


@dataclass(frozen=True, slots=True)
class ReputationCounts:
    """The window's counts account-wide, and per topic for the topics with a bounce in it."""

    account: GuardCounts
    topics: dict[str, GuardCounts]


@dataclass(frozen=True, slots=True)
class ReputationHold:
    """A hold the guard decided (``topic_id`` is "" for the account); it lasts until an operator
    resumes it."""

    scope: HoldScope
    topic_id: str
    reason: str
    held_at_ms: int


# --- data lifecycle: retention, storage figures (sesender.store.sqlite_lifecycle) -----------


@dataclass(frozen=True, slots=True)
class PruneScan:
    """One step of the retention walk: the emails old enough to delete among those looked at.

    ``next_after_id`` is where the next step starts; ``done`` says no later email can be old
    enough (the walk reached emails created after the cutoff, or the end).
    """

    candidates: tuple[int, ...]
    next_after_id: int
    done: bool


@dataclass(frozen=True, slots=True)
class PruneBatch:
    """What one short deleting transaction did.

    ``range_first_id`` is the first id of the range of ids this run has pruned so far (None until
    it pruned one), handed back to the next batch so that a run records one range.
    """

    emails: int
    results: int
    contents: int
    range_first_id: int | None


@dataclass(frozen=True, slots=True)
class StorageStats:
    """The database's size and contents, for ``/metrics``, the dashboard and ``/v1/stats/storage``.

    Row counts come from the counters the store keeps (never a ``COUNT(*)`` over the emails),
    so they cost the same on ten emails or a hundred million. Times are Unix milliseconds, None
    when it never happened.
    """

    database_bytes: int
    free_bytes: int
    file_bytes: int
    rows: dict[str, int]
    emails_pruned: int
    last_prune_at_ms: int | None
    last_backup_at_ms: int | None
