"""The reputation guard's SQL on PostgreSQL: the twin of :mod:`sesender.store.sqlite_reputation`
(the counters are kept by PostgreSQL migration 2's triggers, :mod:`sesender.store.pg_schema`).

Holds are rows every instance reads: the guard of each instance applies the holds it finds at
each evaluation, so a hold decided, or lifted, on one instance reaches the others within
``GUARD_CHECK_SECONDS``.
"""

from __future__ import annotations

from sesender.models import GuardCounts, HoldScope, ReputationCounts, ReputationHold, Status
from sesender.store.pg_queries import Connection
from sesender.store.sqlite_reputation import BUCKET_MS, first_bucket


def reputation_counts(connection: Connection, since_ms: int) -> ReputationCounts:
    since = first_bucket(since_ms)
    row = connection.execute(
        "SELECT COALESCE(SUM(sends), 0), COALESCE(SUM(bounces), 0), COALESCE(SUM(complaints), 0)"
        " FROM guard_topic_counts WHERE bucket >= GREATEST(%s, COALESCE((SELECT resumed_at / %s"
        " + 1 FROM reputation_holds WHERE scope = 'account' AND topic_id = ''), 0))",
        (since, BUCKET_MS),
    ).fetchone()
    assert row is not None
    account = GuardCounts(sends=int(row[0]), bounces=int(row[1]), complaints=int(row[2]))
    topics = {
        str(topic_id): GuardCounts(sends=int(sends), bounces=int(bounces), complaints=int(compl))
        for topic_id, sends, bounces, compl in connection.execute(
            "SELECT g.topic_id, SUM(g.sends), SUM(g.bounces), SUM(g.complaints)"
            " FROM guard_topic_counts AS g LEFT JOIN reputation_holds AS h"
            " ON h.scope = 'topic' AND h.topic_id = g.topic_id"
            " WHERE g.bucket >= %s AND (h.resumed_at IS NULL OR g.bucket > h.resumed_at / %s)"
            " GROUP BY g.topic_id HAVING SUM(g.bounces) > 0",
            (since, BUCKET_MS),
        )
    }
    return ReputationCounts(account=account, topics=topics)


def reputation_holds(connection: Connection) -> list[ReputationHold]:
    return [
        ReputationHold(
            scope=HoldScope(scope), topic_id=str(topic_id), reason=str(reason), held_at_ms=held_at
        )
        for scope, topic_id, reason, held_at in connection.execute(
            "SELECT scope, topic_id, reason, held_at FROM reputation_holds"
            " WHERE held_at IS NOT NULL ORDER BY held_at, scope, topic_id"
        )
    ]


def _record_hold(
    connection: Connection, scope: HoldScope, topic_id: str, reason: str, now_ms: int
) -> bool:
    cursor = connection.execute(
        "INSERT INTO reputation_holds (scope, topic_id, reason, held_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (scope, topic_id) DO UPDATE SET reason = excluded.reason,"
        " held_at = excluded.held_at WHERE reputation_holds.held_at IS NULL",
        (scope.value, topic_id, reason, now_ms),
    )
    return cursor.rowcount > 0


def _lift_hold(connection: Connection, scope: HoldScope, topic_id: str, now_ms: int) -> bool:
    cursor = connection.execute(
        "UPDATE reputation_holds SET held_at = NULL, resumed_at = %s"
        " WHERE scope = %s AND topic_id = %s AND held_at IS NOT NULL",
        (now_ms, scope.value, topic_id),
    )
    return cursor.rowcount > 0


def hold_topic(connection: Connection, topic_id: str, reason: str, now_ms: int) -> int:
    """As :func:`sesender.store.sqlite_reputation.hold_topic`. Emails another live instance has
    claimed are its to hold: its guard applies the hold at its next evaluation, and the requeue
    of what it defers makes them ``Held``."""
    with connection.transaction():
        if not _record_hold(connection, HoldScope.TOPIC, topic_id, reason, now_ms):
            return -1
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.HELD.value}, updated_at = %s"
            f" WHERE topic_id = %s AND status = {Status.CREATED.value}",
            (now_ms, topic_id),
        )
        return cursor.rowcount


def resume_topic(connection: Connection, topic_id: str, now_ms: int) -> int | None:
    with connection.transaction():
        if not _lift_hold(connection, HoldScope.TOPIC, topic_id, now_ms):
            return None
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.CREATED.value}, updated_at = %s"
            f" WHERE topic_id = %s AND status = {Status.HELD.value}",
            (now_ms, topic_id),
        )
        return cursor.rowcount


def hold_account(connection: Connection, reason: str, now_ms: int) -> bool:
    return _record_hold(connection, HoldScope.ACCOUNT, "", reason, now_ms)


def resume_account(connection: Connection, now_ms: int) -> bool:
    return _lift_hold(connection, HoldScope.ACCOUNT, "", now_ms)
