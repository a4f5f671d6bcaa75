"""Records of the webhook feature that cross the store's interfaces (no driver type in them).

Secrets are plain ``whsec_...`` strings, kept out of every ``repr`` so that a log line or a
Sentry event that prints a record never shows one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EventState(enum.IntEnum):
    """Where an event stands for its endpoint (stored as this number)."""

    PENDING = 0
    DELIVERED = 1
    FAILED = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class AttemptOutcome(enum.StrEnum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # another attempt is scheduled
    FAILED = "failed"  # the schedule ran out: the event is failed (it can be resent)
    GONE = "gone"  # 410: the endpoint is disabled, the event waits for it to be enabled again


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """A PATCH: None leaves a field as it is."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    description: str | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at_ms: int
    updated_at_ms: int
    failing_since_ms: int | None
    last_error: str | None
    last_error_at_ms: int | None
    last_attempt_at_ms: int | None
    last_success_at_ms: int | None
    pending: int
    failed: int
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False, default=None)
    previous_secret_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """What the deliverer needs of an enabled endpoint: where, and the secrets to sign with
    (the previous one only until its 24 hours are over)."""

    endpoint_id: str
    url: str
    secrets: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A claimed event: everything its payload is built from."""

    row_id: int
    event_id: str
    endpoint_id: str
    event_type: str
    request_id: int | None
    topic_id: str | None
    email: str | None
    message_id: str | None
    suppressed: bool | None
    detail: str | None
    occurred_at_ms: int
    attempts: int


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One delivery attempt and what it decided for its event."""

    row_id: int
    event_id: str
    endpoint_id: str
    event_type: str
    attempt: int
    attempted_at_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: AttemptOutcome
    #: the next attempt (for RETRY and GONE).
    due_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    event_id: str
    event_type: str
    attempt: int
    attempted_at_ms: int
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class EventSummary:
    event_id: str
    event_type: str
    state: EventState
    attempts: int
    occurred_at_ms: int
    due_at_ms: int
    finished_at_ms: int | None
    last_error: str | None
    request_id: int | None
    topic_id: str | None
