"""The reputation guard's SQL (see :class:`~sesender.store.base.ReputationStore`), on one
``sqlite3.Connection`` inside the store's thread lanes, like :mod:`sesender.store.sqlite_queries`.

The counters are kept by the triggers of migration 8 (:mod:`sesender.store.schema`); these
functions only sum a window of their buckets and record or lift holds. Kept apart from the queue's
queries so that a second engine ports one small, self-contained module.
"""

from __future__ import annotations

import sqlite3

from sesender.models import (
    GuardCounts,
    HoldScope,
    ReputationCounts,
    ReputationHold,
    Status,
)
from sesender.store.sqlite_queries import transaction

#: The counters' bucket width (``sent_at / 10000`` in the triggers).
BUCKET_MS = 10_000


def first_bucket(since_ms: int) -> int:
    """The first whole bucket at or after ``since_ms``."""
    return -(-since_ms // BUCKET_MS)


def reputation_counts(connection: sqlite3.Connection, since_ms: int) -> ReputationCounts:
    """Sums over the buckets from ``since_ms`` on; a scope that an operator resumed counts only
    the buckets after the one it was resumed in."""
    since = first_bucket(since_ms)
    row = connection.execute(
        "SELECT COALESCE(SUM(sends), 0), COALESCE(SUM(bounces), 0), COALESCE(SUM(complaints), 0)"
        " FROM guard_topic_counts WHERE bucket >= MAX(?, COALESCE((SELECT resumed_at / ? + 1"
        " FROM reputation_holds WHERE scope = 'account' AND topic_id = ''), 0))",
        (since, BUCKET_MS),
    ).fetchone()
    account = GuardCounts(sends=int(row[0]), bounces=int(row[1]), complaints=int(row[2]))
    topics = {
        str(topic_id): GuardCounts(sends=int(sends), bounces=int(bounces), complaints=int(compl))
        for topic_id, sends, bounces, compl in connection.execute(
            "SELECT g.topic_id, SUM(g.sends), SUM(g.bounces), SUM(g.complaints)"
            " FROM guard_topic_counts AS g LEFT JOIN reputation_holds AS h"
            " ON h.scope = 'topic' AND h.topic_id = g.topic_id"
            " WHERE g.bucket >= ? AND (h.resumed_at IS NULL OR g.bucket > h.resumed_at / ?)"
            " GROUP BY g.topic_id HAVING SUM(g.bounces) > 0",
            (since, BUCKET_MS),
        )
    }
    return ReputationCounts(account=account, topics=topics)


def reputation_holds(connection: sqlite3.Connection) -> list[ReputationHold]:
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
    connection: sqlite3.Connection, scope: HoldScope, topic_id: str, reason: str, now_ms: int
) -> bool:
    """Record the hold unless one is in force; return True when this call recorded it."""
    cursor = connection.execute(
        "INSERT INTO reputation_holds (scope, topic_id, reason, held_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (scope, topic_id) DO UPDATE SET reason = excluded.reason,"
        " held_at = excluded.held_at WHERE held_at IS NULL",
        (scope.value, topic_id, reason, now_ms),
    )
    return cursor.rowcount > 0


def _lift_hold(
    connection: sqlite3.Connection, scope: HoldScope, topic_id: str, now_ms: int
) -> bool:
    cursor = connection.execute(
        "UPDATE reputation_holds SET held_at = NULL, resumed_at = ?"
        " WHERE scope = ? AND topic_id = ? AND held_at IS NOT NULL",
        (now_ms, scope.value, topic_id),
    )
    return cursor.rowcount > 0


def hold_topic(connection: sqlite3.Connection, topic_id: str, reason: str, now_ms: int) -> int:
    """Hold the topic: its queued emails end ``Held`` now, and every claim or requeue of one of
    its emails from then on (``sqlite_queries._HELD``) too. Return how many were held now; -1
    when the topic was already held (nothing changes)."""
    with transaction(connection):
        if not _record_hold(connection, HoldScope.TOPIC, topic_id, reason, now_ms):
            return -1
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.HELD.value}, updated_at = ?"
            f" WHERE topic_id = ? AND status = {Status.CREATED.value}",
            (now_ms, topic_id),
        )
        return cursor.rowcount


def resume_topic(connection: sqlite3.Connection, topic_id: str, now_ms: int) -> int | None:
    """Lift the topic's hold and put its ``Held`` emails back in the queue (their due times
    kept); return how many, or None when the topic was not held."""
    with transaction(connection):
        if not _lift_hold(connection, HoldScope.TOPIC, topic_id, now_ms):
            return None
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.CREATED.value}, updated_at = ?"
            f" WHERE topic_id = ? AND status = {Status.HELD.value}",
            (now_ms, topic_id),
        )
        return cursor.rowcount


def hold_account(connection: sqlite3.Connection, reason: str, now_ms: int) -> bool:
    with transaction(connection):
        return _record_hold(connection, HoldScope.ACCOUNT, "", reason, now_ms)


def resume_account(connection: sqlite3.Connection, now_ms: int) -> bool:
    with transaction(connection):
        return _lift_hold(connection, HoldScope.ACCOUNT, "", now_ms)
