"""Synchronous SQL of the outbound webhooks, run inside the SQLite store's thread lanes.

The events themselves are written by the triggers of migration 7, inside the statements that
record what they report; this module manages endpoints (keeping ``webhook_subscriptions`` equal to
the event types of the *enabled* endpoints, which is what the triggers look at), hands events to
the deliverer under a lease, and records attempts in bulk.

Claiming is ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` with a lease column, like the
email queue: an event whose lease has not run out belongs to one deliverer (on PostgreSQL the
inner SELECT gains ``FOR UPDATE SKIP LOCKED``); a deliverer that dies leaves leases that run out,
and the event goes again, with the same event id (at least once).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from sesender.store.sqlite_queries import transaction
from sesender.webhooks.models import (
    AttemptOutcome,
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

_ENDPOINT_COLUMNS = (
    "id, url, event_types, description, enabled, disabled_reason, created_at, updated_at,"
    " failing_since, last_error, last_error_at, last_attempt_at, last_success_at, secret,"
    " previous_secret, previous_secret_until"
)

_EVENT_COLUMNS = (
    "id, event_id, endpoint_id, event_type, request_id, topic_id, email, message_id, suppressed,"
    " detail, occurred_at, attempts"
)


def _endpoint(connection: sqlite3.Connection, row: tuple[object, ...]) -> Endpoint:
    endpoint_id = str(row[0])
    counts = dict(
        connection.execute(
            f"SELECT state, COUNT(*) FROM webhook_events WHERE endpoint_id = ?"
            f" AND state IN ({EventState.PENDING.value}, {EventState.FAILED.value})"
            " GROUP BY state",
            (endpoint_id,),
        ).fetchall()
    )
    return Endpoint(
        endpoint_id=endpoint_id,
        url=str(row[1]),
        event_types=tuple(json.loads(str(row[2]))),
        description=str(row[3]),
        enabled=bool(row[4]),
        disabled_reason=row[5],  # type: ignore[arg-type]
        created_at_ms=row[6],  # type: ignore[arg-type]
        updated_at_ms=row[7],  # type: ignore[arg-type]
        failing_since_ms=row[8],  # type: ignore[arg-type]
        last_error=row[9],  # type: ignore[arg-type]
        last_error_at_ms=row[10],  # type: ignore[arg-type]
        last_attempt_at_ms=row[11],  # type: ignore[arg-type]
        last_success_at_ms=row[12],  # type: ignore[arg-type]
        secret=str(row[13]),
        previous_secret=row[14],  # type: ignore[arg-type]
        previous_secret_until_ms=row[15],  # type: ignore[arg-type]
        pending=int(counts.get(EventState.PENDING.value, 0)),
        failed=int(counts.get(EventState.FAILED.value, 0)),
    )


def get_endpoint(connection: sqlite3.Connection, endpoint_id: str) -> Endpoint | None:
    row = connection.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
    ).fetchone()
    return None if row is None else _endpoint(connection, row)


def list_endpoints(connection: sqlite3.Connection) -> list[Endpoint]:
    rows = connection.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    ).fetchall()
    return [_endpoint(connection, row) for row in rows]


def _subscribe(
    connection: sqlite3.Connection, endpoint_id: str, event_types: Sequence[str] | None
) -> None:
    """Make the endpoint's subscription rows exactly ``event_types`` (None: none, disabled)."""
    connection.execute("DELETE FROM webhook_subscriptions WHERE endpoint_id = ?", (endpoint_id,))
    if event_types:
        connection.executemany(
            "INSERT INTO webhook_subscriptions (event_type, endpoint_id) VALUES (?, ?)",
            ((event_type, endpoint_id) for event_type in event_types),
        )


def create_endpoint(connection: sqlite3.Connection, endpoint: NewEndpoint, now_ms: int) -> Endpoint:
    with transaction(connection):
        connection.execute(
            "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, secret,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            (
                endpoint.endpoint_id,
                endpoint.url,
                endpoint.description,
                json.dumps(list(endpoint.event_types)),
                endpoint.secret,
                now_ms,
                now_ms,
            ),
        )
        _subscribe(connection, endpoint.endpoint_id, endpoint.event_types)
        created = get_endpoint(connection, endpoint.endpoint_id)
    assert created is not None
    return created


def update_endpoint(
    connection: sqlite3.Connection, endpoint_id: str, changes: EndpointChanges, now_ms: int
) -> Endpoint | None:
    """Apply a PATCH; enabling clears the reason and the failure streak of a disabled endpoint."""
    with transaction(connection):
        current = get_endpoint(connection, endpoint_id)
        if current is None:
            return None
        event_types = changes.event_types if changes.event_types is not None else None
        enabled = current.enabled if changes.enabled is None else changes.enabled
        connection.execute(
            "UPDATE webhook_endpoints SET url = COALESCE(?, url),"
            " description = COALESCE(?, description), event_types = COALESCE(?, event_types),"
            " enabled = ?, updated_at = ?,"
            " disabled_reason = CASE WHEN ? THEN NULL"
            "   ELSE COALESCE(disabled_reason, 'disabled through the API') END,"
            " failing_since = CASE WHEN ? AND enabled = 0 THEN NULL ELSE failing_since END"
            " WHERE id = ?",
            (
                changes.url,
                changes.description,
                None if event_types is None else json.dumps(list(event_types)),
                int(enabled),
                now_ms,
                int(enabled),
                int(enabled),
                endpoint_id,
            ),
        )
        _subscribe(
            connection,
            endpoint_id,
            (event_types if event_types is not None else current.event_types) if enabled else None,
        )
        return get_endpoint(connection, endpoint_id)


def delete_endpoint(connection: sqlite3.Connection, endpoint_id: str) -> bool:
    """Forget the endpoint with its queue of events and its attempts."""
    with transaction(connection):
        deleted = connection.execute(
            "DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
        ).rowcount
        _subscribe(connection, endpoint_id, None)
        connection.execute("DELETE FROM webhook_events WHERE endpoint_id = ?", (endpoint_id,))
        connection.execute("DELETE FROM webhook_attempts WHERE endpoint_id = ?", (endpoint_id,))
    return deleted > 0


def rotate_secret(
    connection: sqlite3.Connection, endpoint_id: str, secret: str, keep_until_ms: int, now_ms: int
) -> Endpoint | None:
    """The new secret signs from now on; the current one keeps signing until ``keep_until_ms``."""
    with transaction(connection):
        changed = connection.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = ?,"
            " secret = ?, updated_at = ? WHERE id = ?",
            (keep_until_ms, secret, now_ms, endpoint_id),
        ).rowcount
        return get_endpoint(connection, endpoint_id) if changed else None


def add_event(
    connection: sqlite3.Connection,
    endpoint_id: str,
    event_id: str,
    event_type: str,
    detail: str | None,
    now_ms: int,
) -> bool:
    """Queue one event for one endpoint (the ``test`` event); False if there is no endpoint."""
    with transaction(connection):
        found = connection.execute(
            "SELECT 1 FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()
        if found is None:
            return False
        connection.execute(
            "INSERT INTO webhook_events (event_id, endpoint_id, event_type, detail, occurred_at,"
            " due_at) VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, endpoint_id, event_type, detail, now_ms, now_ms),
        )
    return True


def list_attempts(
    connection: sqlite3.Connection, endpoint_id: str, since_ms: int, limit: int
) -> list[AttemptRecord]:
    rows = connection.execute(
        "SELECT event_id, event_type, attempt, attempted_at, duration_ms, status_code, outcome,"
        " error FROM webhook_attempts WHERE endpoint_id = ? AND attempted_at >= ?"
        " ORDER BY attempted_at DESC, id DESC LIMIT ?",
        (endpoint_id, since_ms, limit),
    ).fetchall()
    return [AttemptRecord(*row) for row in rows]


def list_events(
    connection: sqlite3.Connection, endpoint_id: str, state: EventState | None, limit: int
) -> list[EventSummary]:
    condition = "" if state is None else f" AND state = {state.value}"
    rows = connection.execute(
        "SELECT event_id, event_type, state, attempts, occurred_at, due_at, finished_at,"
        f" last_error, request_id, topic_id FROM webhook_events WHERE endpoint_id = ?{condition}"
        " ORDER BY id DESC LIMIT ?",
        (endpoint_id, limit),
    ).fetchall()
    return [
        EventSummary(
            event_id=row[0],
            event_type=row[1],
            state=EventState(row[2]),
            attempts=row[3],
            occurred_at_ms=row[4],
            due_at_ms=row[5],
            finished_at_ms=row[6],
            last_error=row[7],
            request_id=row[8],
            topic_id=row[9],
        )
        for row in rows
    ]


def resend_event(
    connection: sqlite3.Connection, endpoint_id: str, event_id: str, now_ms: int
) -> bool:
    """Put a finished (failed or delivered) event back in the queue, due now, same event id."""
    with transaction(connection):
        return (
            connection.execute(
                f"UPDATE webhook_events SET state = {EventState.PENDING.value}, attempts = 0,"
                " due_at = ?, finished_at = NULL, lease_until = NULL"
                f" WHERE endpoint_id = ? AND event_id = ? AND state <> {EventState.PENDING.value}",
                (now_ms, endpoint_id, event_id),
            ).rowcount
            > 0
        )


def delivery_targets(connection: sqlite3.Connection, now_ms: int) -> list[DeliveryTarget]:
    """Every enabled endpoint with the secrets it signs with now."""
    rows = connection.execute(
        "SELECT id, url, secret, previous_secret, previous_secret_until FROM webhook_endpoints"
        " WHERE enabled = 1 ORDER BY id"
    ).fetchall()
    return [
        DeliveryTarget(
            endpoint_id=row[0],
            url=row[1],
            secrets=(row[2],)
            if row[3] is None or row[4] is None or row[4] <= now_ms
            else (row[2], row[3]),
        )
        for row in rows
    ]


def claim_events(
    connection: sqlite3.Connection, endpoint_id: str, now_ms: int, lease_until_ms: int, limit: int
) -> list[PendingEvent]:
    """Lease up to ``limit`` due events of one endpoint, oldest due first."""
    if limit <= 0:
        return []
    with transaction(connection):
        rows = connection.execute(
            "UPDATE webhook_events SET lease_until = ? WHERE id IN ("
            " SELECT id FROM webhook_events WHERE endpoint_id = ?"
            f" AND state = {EventState.PENDING.value} AND due_at <= ?"
            " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at, id LIMIT ?)"
            f" RETURNING {_EVENT_COLUMNS}",
            (lease_until_ms, endpoint_id, now_ms, now_ms, limit),
        ).fetchall()
    rows.sort(key=lambda row: row[0])
    return [
        PendingEvent(
            row_id=row[0],
            event_id=row[1],
            endpoint_id=row[2],
            event_type=row[3],
            request_id=row[4],
            topic_id=row[5],
            email=row[6],
            message_id=row[7],
            suppressed=None if row[8] is None else bool(row[8]),
            detail=row[9],
            occurred_at_ms=row[10],
            attempts=row[11],
        )
        for row in rows
    ]


def release_leases(connection: sqlite3.Connection, expired_before_ms: int | None) -> int:
    """Free every lease (at start, when this process is the only deliverer), or only those that
    ran out before ``expired_before_ms`` (a ``deliver-webhooks`` process: others may run)."""
    with transaction(connection):
        if expired_before_ms is None:
            return connection.execute(
                "UPDATE webhook_events SET lease_until = NULL WHERE lease_until IS NOT NULL"
            ).rowcount
        return connection.execute(
            "UPDATE webhook_events SET lease_until = NULL"
            " WHERE lease_until IS NOT NULL AND lease_until <= ?",
            (expired_before_ms,),
        ).rowcount


_STATE_OF = {
    AttemptOutcome.DELIVERED: EventState.DELIVERED,
    AttemptOutcome.FAILED: EventState.FAILED,
    AttemptOutcome.RETRY: EventState.PENDING,
    AttemptOutcome.GONE: EventState.PENDING,
}

_EVENTS_UPDATE_SQL = (
    "UPDATE webhook_events SET state = json_extract(r.value, '$[1]'),"
    " attempts = json_extract(r.value, '$[2]'), due_at = json_extract(r.value, '$[3]'),"
    " finished_at = json_extract(r.value, '$[4]'), last_error = json_extract(r.value, '$[5]'),"
    " lease_until = NULL FROM json_each(?) AS r"
    " WHERE webhook_events.id = json_extract(r.value, '$[0]')"
)
_ATTEMPTS_INSERT_SQL = (
    "INSERT INTO webhook_attempts (endpoint_id, event_id, event_type, attempt, attempted_at,"
    " duration_ms, status_code, outcome, error) SELECT json_extract(value, '$[0]'),"
    " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
    " json_extract(value, '$[4]'), json_extract(value, '$[5]'), json_extract(value, '$[6]'),"
    " json_extract(value, '$[7]'), json_extract(value, '$[8]') FROM json_each(?)"
    # (an endpoint deleted while its attempts were in flight keeps no orphan log rows)
    " WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = json_extract(value, '$[0]'))"
)


def _iso(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def record_attempts(
    connection: sqlite3.Connection,
    results: Sequence[AttemptResult],
    now_ms: int,
    disable_after_ms: int,
) -> list[str]:
    """Record a batch of attempts in one transaction (two bulk statements, then one update per
    endpoint): the events' new states, the attempt log, each endpoint's health. An endpoint that
    answered 410, or has failed without a success for ``disable_after_ms``, is disabled; their
    ids are returned."""
    if not results:
        return []
    events = [
        [
            result.row_id,
            _STATE_OF[result.outcome].value,
            result.attempt,
            result.due_at_ms,
            result.attempted_at_ms
            if result.outcome in (AttemptOutcome.DELIVERED, AttemptOutcome.FAILED)
            else None,
            result.error,
        ]
        for result in results
    ]
    attempts = [
        [
            result.endpoint_id,
            result.event_id,
            result.event_type,
            result.attempt,
            result.attempted_at_ms,
            result.duration_ms,
            result.status_code,
            result.outcome.value,
            result.error,
        ]
        for result in results
    ]
    by_endpoint: dict[str, list[AttemptResult]] = {}
    for result in sorted(results, key=lambda r: r.attempted_at_ms):
        by_endpoint.setdefault(result.endpoint_id, []).append(result)
    disabled: list[str] = []
    with transaction(connection):
        connection.execute(_EVENTS_UPDATE_SQL, (json.dumps(events),))
        connection.execute(_ATTEMPTS_INSERT_SQL, (json.dumps(attempts),))
        for endpoint_id, group in by_endpoint.items():
            row = connection.execute(
                "SELECT failing_since, enabled FROM webhook_endpoints WHERE id = ?",
                (endpoint_id,),
            ).fetchone()
            if row is None:
                continue  # deleted meanwhile
            failing_since: int | None = row[0]
            last_error = last_error_at = last_success = None
            gone = False
            for result in group:
                if result.outcome is AttemptOutcome.DELIVERED:
                    failing_since = None
                    last_success = result.attempted_at_ms
                else:
                    failing_since = failing_since or result.attempted_at_ms
                    last_error = result.error
                    last_error_at = result.attempted_at_ms
                    gone = gone or result.outcome is AttemptOutcome.GONE
            reason = None
            if gone:
                reason = "the endpoint answered 410 Gone"
            elif failing_since is not None and now_ms - failing_since >= disable_after_ms:
                reason = (
                    f"every delivery failed since {_iso(failing_since)}"
                    f" ({disable_after_ms // 86_400_000} days or more)"
                )
            connection.execute(
                "UPDATE webhook_endpoints SET failing_since = ?, last_attempt_at = ?,"
                " last_success_at = COALESCE(?, last_success_at),"
                " last_error = COALESCE(?, last_error),"
                " last_error_at = COALESCE(?, last_error_at) WHERE id = ?",
                (
                    failing_since,
                    group[-1].attempted_at_ms,
                    last_success,
                    last_error,
                    last_error_at,
                    endpoint_id,
                ),
            )
            if reason is not None and row[1]:
                connection.execute(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?,"
                    " updated_at = ? WHERE id = ?",
                    (reason, now_ms, endpoint_id),
                )
                _subscribe(connection, endpoint_id, None)
                disabled.append(endpoint_id)
    return disabled


def prune(
    connection: sqlite3.Connection, delivered_before_ms: int, failed_before_ms: int
) -> tuple[int, int]:
    """Forget delivered events finished before ``delivered_before_ms``, failed events and
    attempts older than ``failed_before_ms``: (events, attempts)."""
    with transaction(connection):
        events = connection.execute(
            f"DELETE FROM webhook_events WHERE state = {EventState.DELIVERED.value}"
            " AND finished_at < ?",
            (delivered_before_ms,),
        ).rowcount
        events += connection.execute(
            f"DELETE FROM webhook_events WHERE state = {EventState.FAILED.value}"
            " AND finished_at < ?",
            (failed_before_ms,),
        ).rowcount
        attempts = connection.execute(
            "DELETE FROM webhook_attempts WHERE attempted_at < ?", (failed_before_ms,)
        ).rowcount
    return events, attempts
