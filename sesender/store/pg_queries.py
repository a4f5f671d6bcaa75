"""Synchronous SQL against one psycopg connection; run only inside the store's thread lane.

The PostgreSQL twin of :mod:`sesender.store.sqlite_queries`: the same operations, the same
results, written for several instances on one database. Connections are in autocommit mode, so
a function that needs one statement pays one round trip (the claim, the common outcome batch);
a function that needs several runs them in ``connection.transaction()``.

What differs from SQLite, and why:

- the claim takes rows with ``FOR UPDATE SKIP LOCKED`` and stamps them with the claiming
  instance's id: two instances never get the same email and never wait for each other;
- cancellation and suppression are decided inside the claim statement, and contents (immutable,
  keyed by id) are fetched only for ids the caller has not cached;
- submissions of immediate emails send ``NOTIFY sesender_queue`` (delivered at commit) so every
  instance's scheduler claims at once; a cancellation sends ``NOTIFY sesender_cancel``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from sesender.models import (
    ApiKey,
    ClaimBatch,
    ClaimedEmail,
    ClickRange,
    Content,
    Deferred,
    EventRecord,
    Failed,
    FailureKind,
    FeedbackItem,
    FeedbackReport,
    IdempotencyRecord,
    NewApiKey,
    NewIdempotencyKey,
    NewMessage,
    Outcome,
    RequestDetail,
    ResultEvent,
    Retry,
    Scope,
    Sent,
    Status,
    Stopped,
    Submission,
    SubmissionReceipt,
    Suppression,
    SuppressionEntry,
    TopicStats,
    TopicSummary,
)
from sesender.store import pg_clicks as clicks
from sesender.store.pg_schema import (
    HOUSEKEEPING_LOCK,
    LATEST_VERSION,
    MIGRATION_LOCK,
    MIGRATIONS,
    REGISTRATION_LOCK,
)
from sesender.store.sqlite_queries import content_digest

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]

#: The channels of LISTEN/NOTIFY (see :mod:`sesender.store.pg_notify`).
QUEUE_CHANNEL = "sesender_queue"
CANCEL_CHANNEL = "sesender_cancel"
PAUSE_CHANNEL = "sesender_pause"

#: The database clock in Unix milliseconds: heartbeats and the shared rate use it, so the
#: instances' own clocks may disagree without harm.
DB_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)"

_CANCELLED = (
    "EXISTS (SELECT 1 FROM topic_cancellations AS c"
    " WHERE c.topic_id = requests.topic_id AND c.up_to_id >= requests.id)"
)
#: A topic the reputation guard holds (see :mod:`sesender.store.pg_reputation`).
_HELD = (
    "EXISTS (SELECT 1 FROM reputation_holds AS h WHERE h.scope = 'topic'"
    " AND h.topic_id = requests.topic_id AND h.held_at IS NOT NULL)"
)
_REQUEUED_STATUS = (
    f"CASE WHEN {_CANCELLED} THEN {Status.STOPPED.value} WHEN {_HELD} THEN {Status.HELD.value}"
    f" ELSE {Status.CREATED.value} END"
)


# --- migrations -----------------------------------------------------------------------------


def apply_migrations(connection: Connection) -> list[int]:
    """Bring the schema to the latest version under the migration advisory lock (concurrent
    starts: one migrates, the others wait and then find nothing to do); return the versions
    applied."""
    connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = connection.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        ).fetchone()
        current = int(row[0]) if row else 0
        if current > LATEST_VERSION:
            raise psycopg.errors.DataException(
                f"database schema version {current} is newer than this sesender ({LATEST_VERSION})"
            )
        applied: list[int] = []
        for version in range(current + 1, LATEST_VERSION + 1):
            with connection.transaction():
                connection.execute(MIGRATIONS[version - 1].encode())
                connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                )
            applied.append(version)
        return applied
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def schema_version(connection: Connection) -> int:
    row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


# --- submission -----------------------------------------------------------------------------


def submit(
    connection: Connection,
    submission: Submission,
    idempotency: NewIdempotencyKey | None,
    idempotency_since_ms: int,
    notify: bool,
) -> SubmissionReceipt:
    now = submission.created_at_ms
    due = submission.due_at_ms
    stored = 0
    first_id: int | None = None
    click_ranges: list[ClickRange] = []
    with connection.transaction():
        if idempotency is not None:
            # Two requests with one key: the second waits here until the first commits.
            connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (idempotency.key,)
            )
            existing = find_idempotency(connection, idempotency.key, idempotency_since_ms)
            if existing is not None:
                return SubmissionReceipt(stored=0, first_request_id=None, replayed=existing)
        per_topic: Counter[str] = Counter()
        uses: Counter[int] = Counter()
        for message in submission.messages:
            if not message.emails:
                continue
            content_id = _content_id(connection, message, now)
            uses[content_id] += len(message.emails)
            data = (
                None
                if message.data is None
                else [json.dumps(values, separators=(",", ":")) for values in message.data]
            )
            row = connection.execute(
                "WITH inserted AS (INSERT INTO requests (topic_id, content_id, email, data,"
                " status, attempts, due_at, created_at, updated_at, api_key_id, track_opens,"
                " track_clicks) SELECT %s, %s, e.email, e.data,"
                f" {Status.CREATED.value}, 0, %s, %s, %s, %s, %s, %s"
                " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS e (email, data, n)"
                " ORDER BY e.n RETURNING id) SELECT MIN(id), COUNT(*), MAX(id) FROM inserted",
                (
                    message.topic_id,
                    content_id,
                    due,
                    now,
                    now,
                    submission.api_key_id,
                    int(message.track_opens),
                    int(message.track_clicks),
                    list(message.emails),
                    data if data is not None else [None] * len(message.emails),
                ),
            ).fetchone()
            assert row is not None
            if first_id is None:
                first_id = int(row[0])
            stored += int(row[1])
            per_topic[message.topic_id] += len(message.emails)
            if message.track_clicks and message.links:
                urls = clicks.store_links(connection, message.topic_id, content_id, message.links)
                low, count, high = int(row[0]), int(row[1]), int(row[2])
                if high - low + 1 == count:  # other instances' inserts may interleave ids
                    click_ranges.append(ClickRange(low, high, urls))
        if uses:
            _add_content_refs(connection, uses)
        ordered = sorted(per_topic.items())
        if ordered:
            topics = [topic for topic, _ in ordered]
            connection.execute(
                "INSERT INTO topics (topic_id, created_at, updated_at)"
                " SELECT t, %s, %s FROM unnest(%s::text[]) AS t"
                " ON CONFLICT (topic_id) DO UPDATE SET updated_at = excluded.updated_at",
                (now, now, topics),
            )
            connection.execute(
                "INSERT INTO topic_counts (topic_id, status, count)"
                f" SELECT t, {Status.CREATED.value}, c FROM unnest(%s::text[], %s::bigint[])"
                " AS x (t, c) ON CONFLICT (topic_id, status)"
                " DO UPDATE SET count = topic_counts.count + excluded.count",
                (topics, [count for _, count in ordered]),
            )
        response = None
        if idempotency is not None:
            response = idempotency.response_for(first_id)
            connection.execute(
                "INSERT INTO idempotency_keys (key, body_digest, response, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET body_digest ="
                " excluded.body_digest, response = excluded.response, created_at ="
                " excluded.created_at",
                (idempotency.key, idempotency.body_digest, response, idempotency.created_at_ms),
            )
        if notify and stored:
            connection.execute("SELECT pg_notify(%s, '')", (QUEUE_CHANNEL,))
    return SubmissionReceipt(
        stored=stored,
        first_request_id=first_id,
        response=response,
        click_ranges=tuple(click_ranges),
    )


def _content_id(connection: Connection, message: NewMessage, now: int) -> int:
    """The id of the message's content, stored if new, its row held with ``FOR KEY SHARE``
    until the transaction ends (so retention cannot delete it under the emails being inserted).

    The use count (``refs``) is raised by :func:`_add_content_refs` at the end of the
    transaction, not here: raising it here took the row's update lock for the whole insert of
    the emails, and every other submission of the same content, on any instance, waited for it.
    ``FOR KEY SHARE`` locks are shared; the count's update waits only for the other commits."""
    digest = content_digest(message.subject, message.body, message.sender, message.reply_to)
    existing = "SELECT id FROM contents WHERE digest = %s FOR KEY SHARE"
    row = connection.execute(existing, (digest,)).fetchone()
    if row is None:
        # New: stored with no uses yet; a concurrent insert of the same content waits for
        # this transaction (the unique digest), then finds the row.
        row = (
            connection.execute(
                "INSERT INTO contents (digest, subject, body, sender, reply_to, created_at, refs)"
                " VALUES (%s, %s, %s, %s, %s, %s, 0) ON CONFLICT (digest) DO NOTHING RETURNING id",
                (digest, message.subject, message.body, message.sender, message.reply_to, now),
            ).fetchone()
            or connection.execute(existing, (digest,)).fetchone()
        )
    assert row is not None
    return int(row[0])


def _add_content_refs(connection: Connection, uses: Counter[int]) -> None:
    """Count the submission's emails as uses of their contents (see
    :mod:`sesender.store.pg_lifecycle`), in id order (no deadlock between two submissions)."""
    ordered = sorted(uses.items())
    connection.execute(
        "UPDATE contents SET refs = contents.refs + u.n"
        " FROM unnest(%s::bigint[], %s::bigint[]) AS u (id, n) WHERE contents.id = u.id",
        ([content for content, _ in ordered], [count for _, count in ordered]),
    )


def find_idempotency(connection: Connection, key: str, since_ms: int) -> IdempotencyRecord | None:
    row = connection.execute(
        "SELECT key, body_digest, response, created_at FROM idempotency_keys"
        " WHERE key = %s AND created_at >= %s",
        (key, since_ms),
    ).fetchone()
    if row is None:
        return None
    return IdempotencyRecord(
        key=row[0], body_digest=bytes(row[1]), response=row[2], created_at_ms=row[3]
    )


# --- the queue ------------------------------------------------------------------------------

#: A CTE (join it into the statement's FROM list as ``async_commit``) that commits the statement
#: without waiting for the WAL flush: ``synchronous_commit`` off for this transaction only. For
#: the queue's hot writes, claims and outcomes, which several instances make on the same counter
#: rows (``topic_counts`` of a topic, ``sent_minutes``, ``guard_topic_counts``): with a flush per
#: commit, each waited an fsync while holding those row locks, and the other instances queued
#: behind it. What it risks is what SQLite's ``synchronous = NORMAL`` risks: a crash of the
#: PostgreSQL server (or the machine; not a clean stop, not a crash of sesender) can lose the
#: last few hundred milliseconds (3 x ``wal_writer_delay``) of these writes, as if they had not
#: happened: a lost claim puts its email back in the queue, a lost ``Sent`` sends it again
#: (at-least-once, as after a crash of an instance). Submissions, cancellations, suppressions
#: and the rest keep the synchronous commit: what the API accepted is never lost.
_ASYNC_COMMIT = (
    "async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))"
)

_CLAIM_SQL = (
    "WITH picked AS (SELECT id FROM requests"
    f" WHERE status = {Status.CREATED.value} AND due_at <= %(now)s"
    " ORDER BY due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
    f" {_ASYNC_COMMIT}"
    " UPDATE requests SET updated_at = %(now)s, claimed_by = %(instance)s,"
    f" status = CASE WHEN {_CANCELLED} THEN {Status.STOPPED.value}"
    f" WHEN {_HELD} THEN {Status.HELD.value}"
    " WHEN EXISTS (SELECT 1 FROM suppressions AS s WHERE s.email = lower(requests.email))"
    f" THEN {Status.SUPPRESSED.value} ELSE {Status.PROCESSED.value} END"
    " FROM picked, async_commit WHERE requests.id = picked.id"
    " RETURNING requests.id, topic_id, content_id, email, attempts, due_at, status, data,"
    " track_opens, track_clicks"
)


def claim_due(
    connection: Connection,
    now_ms: int,
    limit: int,
    instance_id: str,
    contents_cache: dict[int, Content],
) -> ClaimBatch:
    """Claim due emails in one statement (one round trip; a second only for contents not in
    ``contents_cache``, which is filled here)."""
    if limit <= 0:
        return ClaimBatch(emails=(), suppressed=0)
    claimed = connection.execute(
        _CLAIM_SQL, {"now": now_ms, "limit": limit, "instance": instance_id}
    ).fetchall()
    stopped = sum(1 for row in claimed if row[6] == Status.STOPPED)
    suppressed = sum(1 for row in claimed if row[6] == Status.SUPPRESSED)
    rows = sorted(
        (row for row in claimed if row[6] == Status.PROCESSED), key=lambda row: (row[5], row[0])
    )
    missing = sorted({row[2] for row in rows} - contents_cache.keys())
    if missing:
        for content_id, subject, body, sender, reply_to in connection.execute(
            "SELECT id, subject, body, sender, reply_to FROM contents WHERE id = ANY(%s)",
            (missing,),
        ):
            contents_cache[content_id] = Content(
                subject=subject, body=body, sender=sender, reply_to=reply_to
            )
    emails = tuple(
        ClaimedEmail(
            request_id=row[0],
            topic_id=row[1],
            email=row[3],
            content=contents_cache[row[2]],
            attempts=row[4],
            data=None if row[7] is None else json.loads(row[7]),
            track_opens=None if row[8] is None else bool(row[8]),
            track_clicks=bool(row[9]),
        )
        for row in rows
    )
    return ClaimBatch(emails=emails, suppressed=suppressed, stopped=stopped)


def next_due_at(connection: Connection) -> int | None:
    row = connection.execute(
        f"SELECT due_at FROM requests WHERE status = {Status.CREATED.value}"
        " ORDER BY due_at, id LIMIT 1"
    ).fetchone()
    return None if row is None else int(row[0])


def recover_claimed(connection: Connection, now_ms: int) -> int:
    """Requeue every ``Processed`` email (tests and ``migrate-store``; the running service uses
    :func:`requeue_dead_claims`, which spares the claims of live instances)."""
    cursor = connection.execute(
        f"UPDATE requests SET status = {_REQUEUED_STATUS}, updated_at = %s, claimed_by = NULL,"
        f" due_at = LEAST(due_at, %s) WHERE status = {Status.PROCESSED.value}",
        (now_ms, now_ms),
    )
    return cursor.rowcount


# --- instances ------------------------------------------------------------------------------


class InstanceRate(NamedTuple):
    """An instance's share of the account rate settings (see :func:`register_instance`)."""

    instance_id: str
    #: None: not known (an instance of an older version; a store opened without settings).
    max_send_per_second: float | None
    send_burst: float | None


def register_instance(
    connection: Connection, instance: InstanceRate, lease_ms: int
) -> list[InstanceRate]:
    """Register ``instance`` with its first heartbeat, unless a live instance (heartbeat within
    ``lease_ms``) has other rate settings: then nothing is written and those instances are
    returned. Under an advisory lock, so of two instances starting at once with different
    settings the second sees the first."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRATION_LOCK,))
        differing = [
            InstanceRate(str(row[0]), float(row[1]), float(row[2]))
            for row in connection.execute(
                "SELECT instance_id, max_send_per_second, send_burst FROM instances"
                f" WHERE instance_id <> %s AND heartbeat_at >= {DB_NOW_MS} - %s"
                " AND max_send_per_second IS NOT NULL"
                " AND (max_send_per_second, send_burst)"
                " IS DISTINCT FROM (%s::float8, %s::float8) ORDER BY instance_id",
                (instance.instance_id, lease_ms, instance.max_send_per_second, instance.send_burst),
            )
        ]
        if not differing or instance.max_send_per_second is None:
            heartbeat(connection, instance)
            return []
        return differing


def heartbeat(connection: Connection, instance: InstanceRate) -> bool:
    """Register or refresh this instance's heartbeat (database clock); True when the row had to
    be created (the first beat, or another instance took this one for dead and removed it)."""
    row = connection.execute(
        "INSERT INTO instances (instance_id, started_at, heartbeat_at, max_send_per_second,"
        f" send_burst) VALUES (%s, {DB_NOW_MS}, {DB_NOW_MS}, %s, %s)"
        " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
        " max_send_per_second = excluded.max_send_per_second, send_burst = excluded.send_burst"
        " RETURNING (xmax = 0)",
        instance,
    ).fetchone()
    return bool(row and row[0])


def requeue_dead_claims(connection: Connection, lease_ms: int, now_ms: int, sweep: bool) -> int:
    """Requeue the emails claimed by instances whose heartbeat is older than ``lease_ms``, and
    forget those instances; with ``sweep``, also the claims of instances that left no row at all
    (a cheap check every heartbeat, the full one now and then); return how many emails."""
    with connection.transaction():
        dead = [
            row[0]
            for row in connection.execute(
                "DELETE FROM instances WHERE heartbeat_at < " + DB_NOW_MS + " - %s"
                " RETURNING instance_id",
                (lease_ms,),
            )
        ]
        if not dead and not sweep:
            return 0
        orphans = (
            " OR claimed_by IS NULL OR NOT EXISTS"
            " (SELECT 1 FROM instances AS i WHERE i.instance_id = requests.claimed_by)"
            if sweep
            else ""
        )
        cursor = connection.execute(
            f"UPDATE requests SET status = {_REQUEUED_STATUS}, updated_at = %s, claimed_by = NULL,"
            f" due_at = LEAST(due_at, %s) WHERE status = {Status.PROCESSED.value}"
            f" AND (claimed_by = ANY(%s){orphans})",
            (now_ms, now_ms, dead),
        )
        return cursor.rowcount


def instance_ids(connection: Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT instance_id FROM instances ORDER BY 1")]


def leave(connection: Connection, instance_id: str) -> None:
    """A clean shutdown: the instance's row goes (its claims were all written back)."""
    connection.execute("DELETE FROM instances WHERE instance_id = %s", (instance_id,))


def take_tokens(
    connection: Connection,
    name: str,
    count: float,
    rate: float,
    burst: float,
    at_most: float | None = None,
) -> tuple[float, float]:
    """Take at least ``count`` and at most ``at_most`` (default ``count``) tokens from the
    shared bucket ``name`` (refilled at ``rate`` by the database clock, capped at ``burst``) in
    one statement, or none when fewer than ``count`` are there: (tokens taken, tokens there
    were)."""
    most = count if at_most is None else max(count, at_most)
    row = connection.execute(
        "WITH now AS (SELECT " + DB_NOW_MS + "::float8 AS ms),"
        " current AS (SELECT b.name, LEAST(%(burst)s::float8, b.tokens"
        " + GREATEST(0, now.ms - b.updated_at) * %(rate)s::float8 / 1000) AS available,"
        " GREATEST(b.updated_at, now.ms) AS at FROM rate_buckets AS b, now"
        " WHERE b.name = %(name)s FOR UPDATE OF b)"
        " UPDATE rate_buckets AS b SET updated_at = current.at, tokens = current.available"
        " - CASE WHEN current.available >= %(count)s"
        " THEN LEAST(current.available, %(most)s) ELSE 0 END"
        " FROM current WHERE b.name = current.name"
        " RETURNING current.available",
        {"name": name, "count": count, "most": most, "rate": rate, "burst": burst},
    ).fetchone()
    if row is None:
        connection.execute(
            "INSERT INTO rate_buckets (name, tokens, updated_at)"
            f" VALUES (%s, %s, {DB_NOW_MS}) ON CONFLICT (name) DO NOTHING",
            (name, burst),
        )
        return take_tokens(connection, name, count, rate, burst, at_most)
    available = float(row[0])
    return (min(available, most) if available >= count else 0.0), available


# --- outcomes -------------------------------------------------------------------------------

_FAILED_SQL = (
    f"UPDATE requests SET status = {Status.FAILED.value}, error = %s, failure_kind = %s,"
    f" attempts = %s, updated_at = %s WHERE id = %s AND status = {Status.PROCESSED.value}"
)
_RETRY_SQL = (
    f"UPDATE requests SET status = {_REQUEUED_STATUS}, error = %s, attempts = %s, due_at = %s,"
    f" updated_at = %s, claimed_by = NULL WHERE id = %s AND status = {Status.PROCESSED.value}"
)
_DEFERRED_SQL = (
    f"UPDATE requests SET status = {_REQUEUED_STATUS}, due_at = %s, updated_at = %s,"
    f" claimed_by = NULL WHERE id = %s AND status = {Status.PROCESSED.value}"
)
_STOPPED_SQL = (
    f"UPDATE requests SET status = {Status.STOPPED.value}, updated_at = %s"
    f" WHERE id = %s AND status IN ({Status.CREATED.value}, {Status.PROCESSED.value})"
)
_SENT_SQL = (
    f"UPDATE requests SET status = {Status.SENT.value}, message_id = %s, attempts = %s,"
    " sent_at = %s, error = NULL, failure_kind = NULL, updated_at = %s"
    f" WHERE id = %s AND status = {Status.PROCESSED.value}"
)
# The common outcome of a batch as one statement over arrays (one round trip, one trigger run).
_SENT_BATCH_SQL = (
    f"WITH {_ASYNC_COMMIT}"
    f" UPDATE requests SET status = {Status.SENT.value}, message_id = s.message_id,"
    " attempts = s.attempts, sent_at = s.sent_at, error = NULL, failure_kind = NULL,"
    " updated_at = %s FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[])"
    " AS s (message_id, attempts, sent_at, id), async_commit"
    f" WHERE requests.id = s.id AND requests.status = {Status.PROCESSED.value}"
)


def _outcome_statement(outcome: Outcome, now_ms: int) -> tuple[str, tuple[Any, ...]]:
    match outcome:
        case Sent():
            return _SENT_SQL, (
                outcome.message_id,
                outcome.attempts,
                outcome.sent_at_ms,
                now_ms,
                outcome.request_id,
            )
        case Failed():
            return _FAILED_SQL, (
                outcome.error,
                outcome.kind.value,
                outcome.attempts,
                now_ms,
                outcome.request_id,
            )
        case Retry():
            return _RETRY_SQL, (
                outcome.error,
                outcome.attempts,
                outcome.due_at_ms,
                now_ms,
                outcome.request_id,
            )
        case Deferred():
            return _DEFERRED_SQL, (outcome.due_at_ms, now_ms, outcome.request_id)
        case Stopped():
            return _STOPPED_SQL, (now_ms, outcome.request_id)


def record_outcomes(connection: Connection, outcomes: Sequence[Outcome], now_ms: int) -> int:
    """Bulk-apply outcomes (one statement when all are ``Sent``); on a data error, fall back to
    one row at a time. Returns how many outcomes could not be written even alone."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for outcome in outcomes:
        sql, parameters = _outcome_statement(outcome, now_ms)
        grouped.setdefault(sql, []).append(parameters)
    sent: list[tuple[Any, ...]] = []
    if len({outcome.request_id for outcome in outcomes}) == len(outcomes):
        sent = grouped.pop(_SENT_SQL, [])
    try:
        if sent and not grouped:
            _sent_batch(connection, sent, now_ms)
        else:
            with connection.transaction():
                connection.execute("SET LOCAL synchronous_commit = off")  # see _ASYNC_COMMIT
                if sent:
                    _sent_batch(connection, sent, now_ms)
                for sql, rows in grouped.items():
                    with connection.cursor() as cursor:
                        cursor.executemany(sql, rows)
        return 0
    except (psycopg.OperationalError, psycopg.errors.TransactionRollback):
        raise  # unavailable, or a deadlock: the caller keeps the batch and retries
    except psycopg.DatabaseError:
        logger.warning("bulk outcome update failed; writing %d outcomes one by one", len(outcomes))
    failed = 0
    for outcome in outcomes:
        sql, parameters = _outcome_statement(outcome, now_ms)
        try:
            connection.execute(sql, parameters)
        except psycopg.OperationalError:
            raise
        except psycopg.DatabaseError:
            failed += 1
            logger.exception("could not record outcome for request %d", outcome.request_id)
    return failed


def record_outcome_batches(
    connection: Connection, batches: Sequence[Sequence[Outcome]], now_ms: int
) -> tuple[int, int]:
    """:func:`record_outcomes` of each batch in turn (one transaction each). Returns how many
    batches were written and how many outcomes could not be written even alone, in all.

    A batch the database refuses ends the call; when batches were written before it, it returns
    (the caller writes the rest again) rather than raise, so that no batch is ever written
    twice: an outcome that put its email back in the queue (``Retry``, ``Deferred``) would apply
    again to that email once it is claimed anew. Raises when the first batch is refused
    (a deadlock there is retried by the store, which runs the call again: nothing was written)."""
    unwritten = 0
    for index, batch in enumerate(batches):
        try:
            unwritten += record_outcomes(connection, batch, now_ms)
        except psycopg.Error:
            if index == 0:
                raise
            return index, unwritten
    return len(batches), unwritten


def _sent_batch(connection: Connection, sent: list[tuple[Any, ...]], now_ms: int) -> None:
    connection.execute(
        _SENT_BATCH_SQL,
        (
            now_ms,
            [row[0] for row in sent],
            [row[1] for row in sent],
            [row[2] for row in sent],
            [row[4] for row in sent],
        ),
    )


# --- cancellation ---------------------------------------------------------------------------


def max_request_id(connection: Connection) -> int:
    row = connection.execute("SELECT MAX(id) FROM requests").fetchone()
    return int(row[0] or 0) if row else 0


def stop_topic(
    connection: Connection,
    topic_id: str,
    up_to_id: int,
    keep: Sequence[int],
    now_ms: int,
    instance_id: str,
) -> int:
    """Record the cancellation and stop the topic's queued emails up to it, and those this
    instance claimed except ``keep``; tell every instance (``NOTIFY``), in one transaction.

    Emails other live instances have claimed are theirs to end: they learn of the cancellation
    from the notification (or their poll) and stop what they hold in memory, while what they
    already handed to the provider ends ``Sent``, as it was.
    """
    with connection.transaction():
        connection.execute(
            "INSERT INTO topic_cancellations (topic_id, up_to_id, cancelled_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (topic_id) DO UPDATE SET"
            " up_to_id = GREATEST(topic_cancellations.up_to_id, excluded.up_to_id),"
            " cancelled_at = excluded.cancelled_at",
            (topic_id, up_to_id, now_ms),
        )
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.STOPPED.value}, updated_at = %s"
            " WHERE topic_id = %s AND id <= %s AND NOT (id = ANY(%s))"
            f" AND (status IN ({Status.CREATED.value}, {Status.HELD.value})"
            f" OR (status = {Status.PROCESSED.value}"
            " AND (claimed_by IS NULL OR claimed_by = %s OR NOT EXISTS (SELECT 1 FROM instances"
            " AS i WHERE i.instance_id = requests.claimed_by))))",
            (now_ms, topic_id, up_to_id, list(keep), instance_id),
        )
        connection.execute("SELECT pg_notify(%s, %s)", (CANCEL_CHANNEL, topic_id))
        return cursor.rowcount


def cancellations(connection: Connection) -> dict[str, int]:
    return {
        str(topic_id): int(up_to_id)
        for topic_id, up_to_id in connection.execute(
            "SELECT topic_id, up_to_id FROM topic_cancellations"
        )
    }


# --- results -------------------------------------------------------------------------------


def record_feedback(
    connection: Connection,
    items: Sequence[FeedbackItem],
    suppress_after_transient: int,
    now_ms: int,
) -> list[FeedbackReport]:
    reports: list[FeedbackReport] = []
    with connection.transaction():
        for item in items:
            matched = suppressed = 0
            if item.source_id is not None:
                cursor = connection.execute(
                    "INSERT INTO sns_messages (message_id, received_at) VALUES (%s, %s)"
                    " ON CONFLICT (message_id) DO NOTHING",
                    (item.source_id, now_ms),
                )
                if cursor.rowcount == 0:
                    reports.append(FeedbackReport(duplicates=1))
                    continue
            # Suppressions first: the webhook event a result row makes (its trigger) says
            # whether the address is suppressed, which this item may be what decides.
            for suppression in item.suppressions:
                suppressed += _suppress(connection, suppression, now_ms)
            for email in item.transient_bounces:
                row = connection.execute(
                    "INSERT INTO address_bounces (email, transient, last_at) VALUES (%s, 1, %s)"
                    " ON CONFLICT (email) DO UPDATE SET transient = address_bounces.transient + 1,"
                    " last_at = excluded.last_at RETURNING transient",
                    (email.lower(), now_ms),
                ).fetchone()
                assert row is not None
                count = int(row[0])
                if suppress_after_transient and count >= suppress_after_transient:
                    suppressed += _suppress(
                        connection,
                        Suppression(
                            reason="transient-bounces",
                            source=item.source_id or "feedback",
                            email=email,
                            detail=f"{count} transient bounces",
                        ),
                        now_ms,
                    )
            for event in item.events:
                matched += _record_event(connection, event)
            for click in item.clicks:
                matched += clicks.record_click(connection, click) is not None
            reports.append(FeedbackReport(matched=matched, suppressed=suppressed))
    return reports


def _record_event(connection: Connection, event: ResultEvent) -> int:
    match = None
    if event.message_id:
        match = connection.execute(
            "SELECT id, topic_id FROM requests WHERE message_id = %s LIMIT 1", (event.message_id,)
        ).fetchone()
    if match is None and event.request_id is not None:
        match = connection.execute(
            "SELECT id, topic_id FROM requests WHERE id = %s", (event.request_id,)
        ).fetchone()
    if match is None:
        return 0
    connection.execute(
        "INSERT INTO results (request_id, topic_id, event_type, count, first_at, last_at, detail)"
        " VALUES (%s, %s, %s, 1, %s, %s, %s) ON CONFLICT (request_id, event_type) DO UPDATE"
        " SET count = results.count + 1, last_at = GREATEST(results.last_at, excluded.last_at),"
        " detail = COALESCE(excluded.detail, results.detail)",
        (
            match[0],
            match[1],
            event.event_type,
            event.occurred_at_ms,
            event.occurred_at_ms,
            event.detail,
        ),
    )
    return 1


def _suppress(connection: Connection, suppression: Suppression, now_ms: int) -> int:
    email = suppression.email
    if email is None and suppression.request_id is not None:
        row = connection.execute(
            "SELECT email FROM requests WHERE id = %s", (suppression.request_id,)
        ).fetchone()
        email = None if row is None else row[0]
    if not email:
        return 0
    cursor = connection.execute(
        "INSERT INTO suppressions (email, reason, source, detail, created_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (email) DO NOTHING",
        (email.lower(), suppression.reason, suppression.source, suppression.detail, now_ms),
    )
    return cursor.rowcount


def put_suppression(
    connection: Connection, suppression: Suppression, now_ms: int
) -> SuppressionEntry:
    assert suppression.email is not None
    email = suppression.email.lower()
    row = connection.execute(
        "INSERT INTO suppressions (email, reason, source, detail, created_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (email) DO UPDATE SET reason = excluded.reason,"
        " source = excluded.source, detail = excluded.detail"
        " RETURNING email, reason, source, detail, created_at",
        (email, suppression.reason, suppression.source, suppression.detail, now_ms),
    ).fetchone()
    assert row is not None
    return SuppressionEntry(*row)


def get_suppression(connection: Connection, email: str) -> SuppressionEntry | None:
    row = connection.execute(
        "SELECT email, reason, source, detail, created_at FROM suppressions WHERE email = %s",
        (email.lower(),),
    ).fetchone()
    return None if row is None else SuppressionEntry(*row)


def delete_suppression(connection: Connection, email: str) -> bool:
    with connection.transaction():
        cursor = connection.execute("DELETE FROM suppressions WHERE email = %s", (email.lower(),))
        connection.execute("DELETE FROM address_bounces WHERE email = %s", (email.lower(),))
    return cursor.rowcount > 0


def list_suppressions(
    connection: Connection, email_contains: str | None, after: str | None, limit: int
) -> list[SuppressionEntry]:
    clauses: list[str] = []
    parameters: list[Any] = []
    if email_contains:
        escaped = email_contains.lower().replace("\\", "\\\\").replace("%", "\\%")
        escaped = escaped.replace("_", "\\_")
        clauses.append("email LIKE %s ESCAPE '\\'")
        parameters.append(f"%{escaped}%")
    if after:
        clauses.append("email > %s")
        parameters.append(after.lower())
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(
        f"SELECT email, reason, source, detail, created_at FROM suppressions {where}"
        " ORDER BY email LIMIT %s",
        (*parameters, limit),
    ).fetchall()
    return [SuppressionEntry(*row) for row in rows]


def retry_failed(connection: Connection, topic_id: str, now_ms: int) -> int:
    cursor = connection.execute(
        f"UPDATE requests SET status = {Status.CREATED.value}, attempts = 0, due_at = %s,"
        " updated_at = %s, failure_kind = NULL"
        f" WHERE topic_id = %s AND status = {Status.FAILED.value}"
        f" AND failure_kind IN ('{FailureKind.EXHAUSTED.value}', '{FailureKind.CONFIG.value}')",
        (now_ms, now_ms, topic_id),
    )
    return cursor.rowcount


def prune_before(connection: Connection, before_ms: int) -> tuple[int, int]:
    """Forget old dedup records, on one instance at a time: the transaction takes the
    housekeeping advisory lock, or does nothing when another instance holds it."""
    with connection.transaction():
        row = connection.execute(
            "SELECT pg_try_advisory_xact_lock(%s)", (HOUSEKEEPING_LOCK,)
        ).fetchone()
        if not (row and row[0]):
            return 0, 0
        sns = connection.execute(
            "DELETE FROM sns_messages WHERE received_at < %s", (before_ms,)
        ).rowcount
        keys = connection.execute(
            "DELETE FROM idempotency_keys WHERE created_at < %s", (before_ms,)
        ).rowcount
    return sns, keys


# --- reads ----------------------------------------------------------------------------------


def topic_stats(connection: Connection, topic_id: str) -> TopicStats:
    request_counts = {
        Status(status).label: int(count)
        for status, count in connection.execute(
            "SELECT status, count FROM topic_counts WHERE topic_id = %s AND count > 0",
            (topic_id,),
        )
    }
    result_counts = {
        event_type: int(count)
        for event_type, count in connection.execute(
            "SELECT event_type, count FROM topic_result_counts WHERE topic_id = %s AND count > 0",
            (topic_id,),
        )
    }
    return TopicStats(
        request_counts=request_counts,
        result_counts=result_counts,
        total_clicks=clicks.topic_total_clicks(connection, topic_id),
    )


def recent_topics(connection: Connection, limit: int) -> list[TopicSummary]:
    rows = connection.execute(
        "SELECT topic_id, created_at, updated_at FROM topics"
        " ORDER BY updated_at DESC, topic_id LIMIT %s",
        (limit,),
    ).fetchall()
    return [
        TopicSummary(
            topic_id=topic_id,
            created_at_ms=created_at,
            updated_at_ms=updated_at,
            stats=topic_stats(connection, topic_id),
        )
        for topic_id, created_at, updated_at in rows
    ]


def count_sent_since(connection: Connection, since_ms: int) -> int:
    first_full_minute = -(-since_ms // 60_000)
    row = connection.execute(
        "SELECT (SELECT COALESCE(SUM(count), 0) FROM sent_minutes WHERE minute >= %s),"
        " (SELECT COUNT(*) FROM requests WHERE sent_at >= %s AND sent_at < %s"
        f" AND status = {Status.SENT.value})",
        (first_full_minute, since_ms, first_full_minute * 60_000),
    ).fetchone()
    assert row is not None
    return int(row[0]) + int(row[1])


def queued_count(connection: Connection) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(count), 0) FROM topic_counts"
        f" WHERE status IN ({Status.CREATED.value}, {Status.PROCESSED.value})"
    ).fetchone()
    return int(row[0]) if row else 0


def request_detail(connection: Connection, request_id: int) -> RequestDetail | None:
    row = connection.execute(
        "SELECT r.id, r.topic_id, r.email, r.status, r.attempts, r.message_id, r.error,"
        " r.failure_kind, r.created_at, r.updated_at, r.due_at, r.sent_at, r.api_key_id,"
        " c.sender FROM requests AS r JOIN contents AS c ON c.id = r.content_id"
        " WHERE r.id = %s",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    events = tuple(
        EventRecord(event_type=r[0], count=r[1], first_at_ms=r[2], last_at_ms=r[3], detail=r[4])
        for r in connection.execute(
            "SELECT event_type, count, first_at, last_at, detail FROM results"
            " WHERE request_id = %s ORDER BY first_at, id",
            (request_id,),
        )
    )
    return RequestDetail(
        request_id=row[0],
        topic_id=row[1],
        email=row[2],
        status=Status(row[3]),
        attempts=row[4],
        message_id=row[5],
        error=row[6],
        failure_kind=FailureKind(row[7]) if row[7] else None,
        created_at_ms=row[8],
        updated_at_ms=row[9],
        due_at_ms=row[10],
        sent_at_ms=row[11],
        events=events,
        api_key_id=row[12],
        sender=row[13],
    )


def ping(connection: Connection) -> None:
    connection.execute("SELECT 1 FROM requests LIMIT 1").fetchall()


# -- service secrets -------------------------------------------------------------------------


def ensure_service_secret(
    connection: Connection, name: str, candidate: bytes, now_ms: int
) -> bytes:
    with connection.transaction():
        connection.execute(
            "INSERT INTO service_secrets (name, value, created_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (name, candidate, now_ms),
        )
        row = connection.execute(
            "SELECT value FROM service_secrets WHERE name = %s", (name,)
        ).fetchone()
    assert row is not None
    return bytes(row[0])


def service_secret(connection: Connection, name: str) -> bytes | None:
    row = connection.execute(
        "SELECT value FROM service_secrets WHERE name = %s", (name,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def replace_service_secret(connection: Connection, name: str, value: bytes, now_ms: int) -> None:
    connection.execute(
        "INSERT INTO service_secrets (name, value, created_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
        " created_at = excluded.created_at",
        (name, value, now_ms),
    )


def notify(connection: Connection, channel: str, payload: str) -> None:
    connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))


# -- named API keys (see sesender.api_keys) ----------------------------------------------------

_API_KEY_COLUMNS = "id, name, scopes, senders, prefix, digest, created_at, last_used_at, revoked_at"


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=int(row[0]),
        name=str(row[1]),
        scopes=frozenset(Scope(scope) for scope in str(row[2]).split(",") if scope),
        senders=None if row[3] is None else tuple(json.loads(row[3])),
        prefix=str(row[4]),
        digest=bytes(row[5]),
        created_at_ms=int(row[6]),
        last_used_at_ms=None if row[7] is None else int(row[7]),
        revoked_at_ms=None if row[8] is None else int(row[8]),
    )


def create_api_key(connection: Connection, key: NewApiKey) -> ApiKey:
    row = connection.execute(
        "INSERT INTO api_keys (name, scopes, senders, prefix, digest, created_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_API_KEY_COLUMNS}",
        (
            key.name,
            ",".join(sorted(key.scopes)),
            None if key.senders is None else json.dumps(list(key.senders)),
            key.prefix,
            key.digest,
            key.created_at_ms,
        ),
    ).fetchone()
    assert row is not None
    return _api_key(row)


def api_keys(connection: Connection, include_revoked: bool) -> list[ApiKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return [
        _api_key(row)
        for row in connection.execute(f"SELECT {_API_KEY_COLUMNS} FROM api_keys{where} ORDER BY id")
    ]


def revoke_api_key(connection: Connection, key_id: int, now_ms: int) -> ApiKey | None:
    """Revoke the key (the first revocation's time is kept); None when there is no such key."""
    row = connection.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s"
        f" RETURNING {_API_KEY_COLUMNS}",
        (now_ms, key_id),
    ).fetchone()
    return None if row is None else _api_key(row)


def touch_api_keys(connection: Connection, used: Sequence[tuple[int, int]]) -> None:
    """Record when keys were last used; an older time changes nothing. Ids in order, so two
    instances touching the same keys take the row locks in the same order."""
    ordered = sorted(used)
    connection.execute(
        "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), u.at)"
        " FROM unnest(%s::bigint[], %s::bigint[]) AS u (id, at) WHERE api_keys.id = u.id",
        ([key_id for key_id, _ in ordered], [at for _, at in ordered]),
    )
