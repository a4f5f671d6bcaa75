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
    track_opens: bool = True
    track_clicks: bool = False
    links: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Submission:
    """A whole ``POST /v1/messages``: stored in one transaction or not at all."""

    messages: tuple[NewMessage, ...]
    due_at_ms: int
    created_at_ms: int


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
