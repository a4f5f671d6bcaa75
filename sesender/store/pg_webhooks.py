"""Outbound webhooks' SQL on PostgreSQL: the same functions as
:mod:`sesender.store.sqlite_webhooks` (read that module's docstring), written for psycopg, for
several instances on one database.

The events are written by the triggers of PostgreSQL migration 6 (:mod:`sesender.store.pg_schema`).
What differs from SQLite:

- Claiming takes the due rows with ``FOR UPDATE SKIP LOCKED`` and sets their lease in the same
  statement: two instances claiming at once never take one row, and a row whose lease was set and
  committed by another instance is skipped until that lease runs out. So no event is delivered by
  two instances at once; an instance that dies leaves leases that run out, and its events go
  again, with the same event ids (at least once).
- :func:`release_leases` frees only leases that have already run out (which claiming would ignore
  anyway): the other leases may belong to instances that are alive and delivering.
- The health of an endpoint is updated under its row lock (``SELECT ... FOR UPDATE``), so two
  instances recording attempts of one endpoint at once do not lose each other's streak.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from sesender.store.sqlite_webhooks import _STATE_OF, _iso
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

Connection = psycopg.Connection[tuple[Any, ...]]

_ENDPOINT_COLUMNS = (
    "id, url, event_types, description, enabled, disabled_reason, created_at, updated_at,"
    " failing_since, last_error, last_error_at, last_attempt_at, last_success_at, secret,"
    " previous_secret, previous_secret_until"
)

_EVENT_COLUMNS = (
    "id, event_id, endpoint_id, event_type, request_id, topic_id, email, message_id, suppressed,"
    " detail, occurred_at, attempts"
)


def _endpoint(connection: Connection, row: tuple[Any, ...]) -> Endpoint:
    endpoint_id = str(row[0])
    counts = {
        int(state): int(count)
        for state, count in connection.execute(
            "SELECT state, COUNT(*) FROM webhook_events WHERE endpoint_id = %s"
            f" AND state IN ({EventState.PENDING.value}, {EventState.FAILED.value})"
            " GROUP BY state",
            (endpoint_id,),
        ).fetchall()
    }
    return Endpoint(
        endpoint_id=endpoint_id,
        url=str(row[1]),
        event_types=tuple(json.loads(str(row[2]))),
        description=str(row[3]),
        enabled=bool(row[4]),
        disabled_reason=row[5],
        created_at_ms=row[6],
        updated_at_ms=row[7],
        failing_since_ms=row[8],
        last_error=row[9],
        last_error_at_ms=row[10],
        last_attempt_at_ms=row[11],
        last_success_at_ms=row[12],
        secret=str(row[13]),
        previous_secret=row[14],
        previous_secret_until_ms=row[15],
        pending=counts.get(EventState.PENDING.value, 0),
        failed=counts.get(EventState.FAILED.value, 0),
    )


def get_endpoint(connection: Connection, endpoint_id: str) -> Endpoint | None:
    row = connection.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
    ).fetchone()
    return None if row is None else _endpoint(connection, row)


def list_endpoints(connection: Connection) -> list[Endpoint]:
    rows = connection.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    ).fetchall()
    return [_endpoint(connection, row) for row in rows]


def _subscribe(connection: Connection, endpoint_id: str, event_types: Sequence[str] | None) -> None:
    """Make the endpoint's subscription rows exactly ``event_types`` (None: none, disabled)."""
    connection.execute("DELETE FROM webhook_subscriptions WHERE endpoint_id = %s", (endpoint_id,))
    if event_types:
        connection.execute(
            "INSERT INTO webhook_subscriptions (event_type, endpoint_id)"
            " SELECT DISTINCT t, %s FROM unnest(%s::text[]) AS t",
            (endpoint_id, list(event_types)),
        )


def create_endpoint(connection: Connection, endpoint: NewEndpoint, now_ms: int) -> Endpoint:
    with connection.transaction():
        connection.execute(
            "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, secret,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, 1, %s, %s, %s)",
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
    connection: Connection, endpoint_id: str, changes: EndpointChanges, now_ms: int
) -> Endpoint | None:
    """See :func:`sesender.store.sqlite_webhooks.update_endpoint` (the row is locked first)."""
    with connection.transaction():
        locked = connection.execute(
            "SELECT 1 FROM webhook_endpoints WHERE id = %s FOR UPDATE", (endpoint_id,)
        ).fetchone()
        current = None if locked is None else get_endpoint(connection, endpoint_id)
        if current is None:
            return None
        event_types = changes.event_types
        enabled = current.enabled if changes.enabled is None else changes.enabled
        connection.execute(
            "UPDATE webhook_endpoints SET url = COALESCE(%s, url),"
            " description = COALESCE(%s, description), event_types = COALESCE(%s, event_types),"
            " enabled = %s, updated_at = %s,"
            " disabled_reason = CASE WHEN %s THEN NULL"
            "   ELSE COALESCE(disabled_reason, 'disabled through the API') END,"
            " failing_since = CASE WHEN %s AND enabled = 0 THEN NULL ELSE failing_since END"
            " WHERE id = %s",
            (
                changes.url,
                changes.description,
                None if event_types is None else json.dumps(list(event_types)),
                int(enabled),
                now_ms,
                enabled,
                enabled,
                endpoint_id,
            ),
        )
        _subscribe(
            connection,
            endpoint_id,
            (event_types if event_types is not None else current.event_types) if enabled else None,
        )
        return get_endpoint(connection, endpoint_id)


def delete_endpoint(connection: Connection, endpoint_id: str) -> bool:
    """Forget the endpoint with its queue of events and its attempts."""
    with connection.transaction():
        deleted = connection.execute(
            "DELETE FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
        ).rowcount
        _subscribe(connection, endpoint_id, None)
        connection.execute("DELETE FROM webhook_events WHERE endpoint_id = %s", (endpoint_id,))
        connection.execute("DELETE FROM webhook_attempts WHERE endpoint_id = %s", (endpoint_id,))
    return deleted > 0


def rotate_secret(
    connection: Connection, endpoint_id: str, secret: str, keep_until_ms: int, now_ms: int
) -> Endpoint | None:
    """The new secret signs from now on; the current one keeps signing until ``keep_until_ms``."""
    with connection.transaction():
        changed = connection.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = %s,"
            " secret = %s, updated_at = %s WHERE id = %s",
            (keep_until_ms, secret, now_ms, endpoint_id),
        ).rowcount
        return get_endpoint(connection, endpoint_id) if changed else None


def add_event(
    connection: Connection,
    endpoint_id: str,
    event_id: str,
    event_type: str,
    detail: str | None,
    now_ms: int,
) -> bool:
    """Queue one event for one endpoint (the ``test`` event); False if there is no endpoint."""
    with connection.transaction():
        inserted = connection.execute(
            "INSERT INTO webhook_events (event_id, endpoint_id, event_type, detail, occurred_at,"
            " due_at) SELECT %s, id, %s, %s, %s, %s FROM webhook_endpoints WHERE id = %s",
            (event_id, event_type, detail, now_ms, now_ms, endpoint_id),
        ).rowcount
    return inserted > 0


def list_attempts(
    connection: Connection, endpoint_id: str, since_ms: int, limit: int
) -> list[AttemptRecord]:
    rows = connection.execute(
        "SELECT event_id, event_type, attempt, attempted_at, duration_ms, status_code, outcome,"
        " error FROM webhook_attempts WHERE endpoint_id = %s AND attempted_at >= %s"
        " ORDER BY attempted_at DESC, id DESC LIMIT %s",
        (endpoint_id, since_ms, limit),
    ).fetchall()
    return [AttemptRecord(*row) for row in rows]


def list_events(
    connection: Connection, endpoint_id: str, state: EventState | None, limit: int
) -> list[EventSummary]:
    condition = "" if state is None else f" AND state = {state.value}"
    rows = connection.execute(
        "SELECT event_id, event_type, state, attempts, occurred_at, due_at, finished_at,"
        f" last_error, request_id, topic_id FROM webhook_events WHERE endpoint_id = %s{condition}"
        " ORDER BY id DESC LIMIT %s",
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


def resend_event(connection: Connection, endpoint_id: str, event_id: str, now_ms: int) -> bool:
    """Put a finished (failed or delivered) event back in the queue, due now, same event id."""
    with connection.transaction():
        return (
            connection.execute(
                f"UPDATE webhook_events SET state = {EventState.PENDING.value}, attempts = 0,"
                " due_at = %s, finished_at = NULL, lease_until = NULL"
                " WHERE endpoint_id = %s AND event_id = %s"
                f" AND state <> {EventState.PENDING.value}",
                (now_ms, endpoint_id, event_id),
            ).rowcount
            > 0
        )


def delivery_targets(connection: Connection, now_ms: int) -> list[DeliveryTarget]:
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
    connection: Connection, endpoint_id: str, now_ms: int, lease_until_ms: int, limit: int
) -> list[PendingEvent]:
    """Lease up to ``limit`` due events of one endpoint, oldest due first; rows another
    instance is claiming right now (locked) are skipped, not waited for."""
    if limit <= 0:
        return []
    rows = connection.execute(
        "UPDATE webhook_events SET lease_until = %s WHERE id IN ("
        " SELECT id FROM webhook_events WHERE endpoint_id = %s"
        f" AND state = {EventState.PENDING.value} AND due_at <= %s"
        " AND (lease_until IS NULL OR lease_until <= %s) ORDER BY due_at, id LIMIT %s"
        " FOR UPDATE SKIP LOCKED)"
        f" RETURNING {_EVENT_COLUMNS}",
        (lease_until_ms, endpoint_id, now_ms, now_ms, limit),
    ).fetchall()
    rows.sort(key=lambda row: int(row[0]))
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


def release_expired_leases(connection: Connection, now_ms: int) -> int:
    """Free the leases that ran out before ``now_ms``; never one that still runs.

    On PostgreSQL several instances deliver from one queue, so an instance that starts must not
    take back leases held by the others (that would deliver their events twice at once). The
    leases of an instance that died simply run out (the deliverer's lease time) and the events
    are claimed again then; freeing expired leases changes nothing a claim would not ignore
    anyway, it only tidies the partial index of leased rows."""
    return connection.execute(
        "UPDATE webhook_events SET lease_until = NULL"
        " WHERE lease_until IS NOT NULL AND lease_until <= %s",
        (now_ms,),
    ).rowcount


def record_attempts(
    connection: Connection,
    results: Sequence[AttemptResult],
    now_ms: int,
    disable_after_ms: int,
) -> list[str]:
    """See :func:`sesender.store.sqlite_webhooks.record_attempts`: two bulk statements (arrays
    unnested), then one update per endpoint under its row lock."""
    if not results:
        return []
    finished = (AttemptOutcome.DELIVERED, AttemptOutcome.FAILED)
    events = (
        [r.row_id for r in results],
        [_STATE_OF[r.outcome].value for r in results],
        [r.attempt for r in results],
        [r.due_at_ms for r in results],
        [r.attempted_at_ms if r.outcome in finished else None for r in results],
        [r.error for r in results],
    )
    attempts = (
        [r.endpoint_id for r in results],
        [r.event_id for r in results],
        [r.event_type for r in results],
        [r.attempt for r in results],
        [r.attempted_at_ms for r in results],
        [r.duration_ms for r in results],
        [r.status_code for r in results],
        [r.outcome.value for r in results],
        [r.error for r in results],
    )
    by_endpoint: dict[str, list[AttemptResult]] = {}
    for result in sorted(results, key=lambda r: r.attempted_at_ms):
        by_endpoint.setdefault(result.endpoint_id, []).append(result)
    disabled: list[str] = []
    with connection.transaction():
        connection.execute(
            "UPDATE webhook_events SET state = r.state, attempts = r.attempts,"
            " due_at = r.due_at, finished_at = r.finished_at, last_error = r.last_error,"
            " lease_until = NULL FROM unnest(%s::bigint[], %s::smallint[], %s::int[],"
            " %s::bigint[], %s::bigint[], %s::text[])"
            " AS r (id, state, attempts, due_at, finished_at, last_error)"
            " WHERE webhook_events.id = r.id",
            events,
        )
        connection.execute(
            "INSERT INTO webhook_attempts (endpoint_id, event_id, event_type, attempt,"
            " attempted_at, duration_ms, status_code, outcome, error)"
            " SELECT a.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],"
            " %s::bigint[], %s::bigint[], %s::int[], %s::text[], %s::text[])"
            " AS a (endpoint_id, event_id, event_type, attempt, attempted_at, duration_ms,"
            " status_code, outcome, error)"
            # (an endpoint deleted while its attempts were in flight keeps no orphan log rows)
            " WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = a.endpoint_id)",
            attempts,
        )
        for endpoint_id in sorted(by_endpoint):  # row locks always in the same order
            group = by_endpoint[endpoint_id]
            row = connection.execute(
                "SELECT failing_since, enabled FROM webhook_endpoints WHERE id = %s FOR UPDATE",
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
                "UPDATE webhook_endpoints SET failing_since = %s, last_attempt_at = %s,"
                " last_success_at = COALESCE(%s, last_success_at),"
                " last_error = COALESCE(%s, last_error),"
                " last_error_at = COALESCE(%s, last_error_at) WHERE id = %s",
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
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = %s,"
                    " updated_at = %s WHERE id = %s",
                    (reason, now_ms, endpoint_id),
                )
                _subscribe(connection, endpoint_id, None)
                disabled.append(endpoint_id)
    return disabled


def prune(
    connection: Connection, delivered_before_ms: int, failed_before_ms: int
) -> tuple[int, int]:
    """Forget delivered events finished before ``delivered_before_ms``, failed events and
    attempts older than ``failed_before_ms``: (events, attempts)."""
    with connection.transaction():
        events = connection.execute(
            f"DELETE FROM webhook_events WHERE state = {EventState.DELIVERED.value}"
            " AND finished_at < %s",
            (delivered_before_ms,),
        ).rowcount
        events += connection.execute(
            f"DELETE FROM webhook_events WHERE state = {EventState.FAILED.value}"
            " AND finished_at < %s",
            (failed_before_ms,),
        ).rowcount
        attempts = connection.execute(
            "DELETE FROM webhook_attempts WHERE attempted_at < %s", (failed_before_ms,)
        ).rowcount
    return events, attempts
