"""Synchronous SQL against one ``sqlite3.Connection``; run only inside the store's thread lanes.

Each write function runs one whole transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) so that a
failure leaves nothing half-written. The async facade in :mod:`sesender.store.sqlite` decides which
lane (writer or reader) a function runs on and translates ``sqlite3`` errors.

Statuses and failure kinds are written into the SQL from :class:`~sesender.models.Status` and
:class:`~sesender.models.FailureKind` as literals (f-strings), not bound as parameters: the
partial indexes (``WHERE status = 0``) are only used when the query's condition is a literal the
planner can match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

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
from sesender.store import sqlite_clicks as clicks
from sesender.store.schema import CONNECTION_PRAGMAS, LATEST_VERSION, MIGRATIONS

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Stay well under SQLite's bound-parameter limit when building ``IN (...)`` lists.
PARAMETER_CHUNK = 500

#: True for a ``requests`` row whose topic was cancelled up to (at least) its id.
_CANCELLED = (
    "EXISTS (SELECT 1 FROM topic_cancellations AS c"
    " WHERE c.topic_id = requests.topic_id AND c.up_to_id >= requests.id)"
)
#: True for a ``requests`` row whose topic the reputation guard holds (until an operator resumes
#: it; see :mod:`sesender.store.sqlite_reputation`).
_HELD = (
    "EXISTS (SELECT 1 FROM reputation_holds AS h WHERE h.scope = 'topic'"
    " AND h.topic_id = requests.topic_id AND h.held_at IS NOT NULL)"
)
#: The status of an email going back to the queue: ``Created``, unless its topic was cancelled,
#: then ``Stopped``, or held by the reputation guard, then ``Held``. Every statement that
#: requeues an email uses it, so a cancellation or a hold outlives the process that received it.
_REQUEUED_STATUS = (
    f"CASE WHEN {_CANCELLED} THEN {Status.STOPPED.value} WHEN {_HELD} THEN {Status.HELD.value}"
    f" ELSE {Status.CREATED.value} END"
)


def connect(path: str, *, busy_timeout: float, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode (we issue BEGIN/COMMIT ourselves) with our PRAGMAs."""
    if read_only:
        connection = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            timeout=busy_timeout,
            check_same_thread=False,
            isolation_level=None,
        )
    else:
        connection = sqlite3.connect(
            path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
        )
    # auto_vacuum only takes effect before the first table exists (a no-op afterwards), and only
    # when set before WAL mode is: so it goes first, on every connection.
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for pragma in CONNECTION_PRAGMAS:
        if read_only and pragma.startswith("PRAGMA journal_mode"):
            continue
        connection.execute(pragma)
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(connection: sqlite3.Connection) -> list[int]:
    """Bring the schema to the latest version; return the versions applied (maybe none)."""
    current = schema_version(connection)
    if current > LATEST_VERSION:
        raise sqlite3.DatabaseError(
            f"database schema version {current} is newer than this sesender ({LATEST_VERSION})"
        )
    applied: list[int] = []
    for version in range(current + 1, LATEST_VERSION + 1):
        script = MIGRATIONS[version - 1]
        try:
            connection.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def chunks(items: Sequence[T], size: int = PARAMETER_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int) -> str:
    return ",".join("?" * count)


def content_digest(
    subject: str, body: str, sender: str | None = None, reply_to: str | None = None
) -> bytes:
    """The content's key; the default sender (None) adds nothing, so contents stored before
    senders per message keep their digest."""
    digest = hashlib.sha256(
        subject.encode("utf-8", "surrogatepass") + b"\x00" + body.encode("utf-8", "surrogatepass")
    )
    if sender is not None or reply_to is not None:
        digest.update(b"\x00sender\x00" + (sender or "").encode("utf-8", "surrogatepass"))
        digest.update(b"\x00reply-to\x00" + (reply_to or "").encode("utf-8", "surrogatepass"))
    return digest.digest()


# --- submission -----------------------------------------------------------------------------


def submit(
    connection: sqlite3.Connection,
    submission: Submission,
    idempotency: NewIdempotencyKey | None,
    idempotency_since_ms: int,
) -> SubmissionReceipt:
    """Insert every email of a submission in one transaction, contents deduplicated; with an
    idempotency key, save the response the caller builds from the first request id."""
    now = submission.created_at_ms
    due = submission.due_at_ms
    stored = 0
    first_id: int | None = None
    click_ranges: list[ClickRange] = []
    with transaction(connection):
        if idempotency is not None:
            existing = find_idempotency(connection, idempotency.key, idempotency_since_ms)
            if existing is not None:
                return SubmissionReceipt(stored=0, first_request_id=None, replayed=existing)
        per_topic: Counter[str] = Counter()
        for message in submission.messages:
            if not message.emails:
                continue
            content_id = _content_id(connection, message, now, len(message.emails))
            # One statement for the whole list: SQLite expands the JSON array itself, which is
            # about twice as fast as executemany binding 10,000 rows one by one from Python.
            tracking = (int(message.track_opens), int(message.track_clicks))
            if message.data is None:
                cursor = connection.execute(
                    "INSERT INTO requests (topic_id, content_id, email, status, attempts, due_at,"
                    " created_at, updated_at, api_key_id, track_opens, track_clicks)"
                    f" SELECT ?, ?, value, {Status.CREATED.value}, 0, ?, ?, ?, ?, ?, ?"
                    " FROM json_each(?)",
                    (
                        message.topic_id,
                        content_id,
                        due,
                        now,
                        now,
                        submission.api_key_id,
                        *tracking,
                        json.dumps(message.emails),
                    ),
                )
            else:
                # The same single statement over [address, values] pairs: json_extract gives
                # the values object back as compact JSON text.
                pairs = json.dumps(list(zip(message.emails, message.data, strict=True)))
                cursor = connection.execute(
                    "INSERT INTO requests (topic_id, content_id, email, data, status, attempts,"
                    " due_at, created_at, updated_at, api_key_id, track_opens, track_clicks)"
                    " SELECT ?, ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
                    f" {Status.CREATED.value}, 0, ?, ?, ?, ?, ?, ? FROM json_each(?)",
                    (
                        message.topic_id,
                        content_id,
                        due,
                        now,
                        now,
                        submission.api_key_id,
                        *tracking,
                        pairs,
                    ),
                )
            count = len(message.emails)
            # One statement by the only writer: the message's ids are consecutive.
            last_id = int(connection.execute("SELECT last_insert_rowid()").fetchone()[0])
            if first_id is None:
                first_id = last_id - count + 1
            stored += cursor.rowcount
            per_topic[message.topic_id] += count
            if message.track_clicks and message.links:
                # After last_insert_rowid() was read: these inserts change it.
                urls = clicks.store_links(connection, message.topic_id, content_id, message.links)
                click_ranges.append(ClickRange(last_id - count + 1, last_id, urls))
        connection.executemany(
            "INSERT INTO topics (topic_id, created_at, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (topic_id) DO UPDATE SET updated_at = excluded.updated_at",
            ((topic, now, now) for topic in per_topic),
        )
        connection.executemany(
            "INSERT INTO topic_counts (topic_id, status, count)"
            f" VALUES (?, {Status.CREATED.value}, ?)"
            " ON CONFLICT (topic_id, status) DO UPDATE SET count = count + excluded.count",
            per_topic.items(),
        )
        response = None
        if idempotency is not None:
            # The stored response is the one the first caller gets, word for word; only this
            # transaction knows the first request id it names.
            response = idempotency.response_for(first_id)
            connection.execute(
                "INSERT INTO idempotency_keys (key, body_digest, response, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET body_digest ="
                " excluded.body_digest, response = excluded.response, created_at ="
                " excluded.created_at",
                (idempotency.key, idempotency.body_digest, response, idempotency.created_at_ms),
            )
    return SubmissionReceipt(
        stored=stored,
        first_request_id=first_id,
        response=response,
        click_ranges=tuple(click_ranges),
    )


def _content_id(connection: sqlite3.Connection, message: NewMessage, now: int, refs: int) -> int:
    digest = content_digest(message.subject, message.body, message.sender, message.reply_to)
    # ``refs`` counts the emails using the content, so that pruning can delete it with its last
    # email (see sesender.store.sqlite_lifecycle).
    row = connection.execute(
        "INSERT INTO contents (digest, subject, body, sender, reply_to, created_at, refs)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (digest) DO UPDATE SET refs = refs + excluded.refs RETURNING id",
        (digest, message.subject, message.body, message.sender, message.reply_to, now, refs),
    ).fetchone()
    return int(row[0])


def find_idempotency(
    connection: sqlite3.Connection, key: str, since_ms: int
) -> IdempotencyRecord | None:
    row = connection.execute(
        "SELECT key, body_digest, response, created_at FROM idempotency_keys"
        " WHERE key = ? AND created_at >= ?",
        (key, since_ms),
    ).fetchone()
    if row is None:
        return None
    return IdempotencyRecord(
        key=row[0], body_digest=bytes(row[1]), response=row[2], created_at_ms=row[3]
    )


# --- the queue ------------------------------------------------------------------------------


def claim_due(connection: sqlite3.Connection, now_ms: int, limit: int) -> ClaimBatch:
    """Claim due emails atomically, join their contents once, end suppressed ones.

    An email of a cancelled topic is never handed out, whatever put it back in the queue: the
    claim ends it ``Stopped`` instead (the requeueing statements already do; this is the last
    line of defence). An email of a topic the reputation guard holds ends ``Held`` (emails
    accepted for the topic after the hold included), until the topic is resumed.
    """
    if limit <= 0:
        return ClaimBatch(emails=(), suppressed=0)
    with transaction(connection):
        claimed = connection.execute(
            f"UPDATE requests SET updated_at = ?, status = CASE WHEN {_CANCELLED}"
            f" THEN {Status.STOPPED.value} WHEN {_HELD} THEN {Status.HELD.value}"
            f" ELSE {Status.PROCESSED.value} END WHERE id IN ("
            f" SELECT id FROM requests WHERE status = {Status.CREATED.value} AND due_at <= ?"
            " ORDER BY due_at, id LIMIT ?)"
            " RETURNING id, topic_id, content_id, email, attempts, due_at, status, data,"
            " track_opens, track_clicks",
            (now_ms, now_ms, limit),
        ).fetchall()
        stopped = sum(1 for row in claimed if row[6] == Status.STOPPED)
        rows = [row for row in claimed if row[6] == Status.PROCESSED]
        if not rows:
            return ClaimBatch(emails=(), suppressed=0, stopped=stopped)
        rows.sort(key=lambda row: (row[5], row[0]))
        suppressed_addresses = _suppressed_among(connection, {row[3].lower() for row in rows})
        suppressed_ids = [row[0] for row in rows if row[3].lower() in suppressed_addresses]
        for chunk in chunks(suppressed_ids):
            connection.execute(
                f"UPDATE requests SET status = {Status.SUPPRESSED.value}, updated_at = ?"
                f" WHERE id IN ({placeholders(len(chunk))})",
                (now_ms, *chunk),
            )
        contents = _contents(connection, {row[2] for row in rows})
    suppressed_set = set(suppressed_ids)
    emails = tuple(
        ClaimedEmail(
            request_id=row[0],
            topic_id=row[1],
            email=row[3],
            content=contents[row[2]],
            attempts=row[4],
            data=None if row[7] is None else json.loads(row[7]),
            track_opens=None if row[8] is None else bool(row[8]),
            track_clicks=bool(row[9]),
        )
        for row in rows
        if row[0] not in suppressed_set
    )
    return ClaimBatch(emails=emails, suppressed=len(suppressed_ids), stopped=stopped)


def _suppressed_among(connection: sqlite3.Connection, addresses: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(addresses)
    for chunk in chunks(ordered):
        found.update(
            row[0]
            for row in connection.execute(
                f"SELECT email FROM suppressions WHERE email IN ({placeholders(len(chunk))})",
                chunk,
            )
        )
    return found


def _contents(connection: sqlite3.Connection, content_ids: set[int]) -> dict[int, Content]:
    contents: dict[int, Content] = {}
    ordered = sorted(content_ids)
    for chunk in chunks(ordered):
        for content_id, subject, body, sender, reply_to in connection.execute(
            "SELECT id, subject, body, sender, reply_to FROM contents"
            f" WHERE id IN ({placeholders(len(chunk))})",
            chunk,
        ):
            contents[content_id] = Content(
                subject=subject, body=body, sender=sender, reply_to=reply_to
            )
    return contents


def next_due_at(connection: sqlite3.Connection) -> int | None:
    row = connection.execute(
        f"SELECT due_at FROM requests WHERE status = {Status.CREATED.value}"
        " ORDER BY due_at, id LIMIT 1"
    ).fetchone()
    return None if row is None else int(row[0])


def recover_claimed(connection: sqlite3.Connection, now_ms: int) -> int:
    """Requeue what a previous process left claimed, due now so it goes first (emails of a
    cancelled topic end ``Stopped`` instead); return how many rows changed."""
    with transaction(connection):
        cursor = connection.execute(
            f"UPDATE requests SET status = {_REQUEUED_STATUS}, updated_at = ?,"
            f" due_at = MIN(due_at, ?) WHERE status = {Status.PROCESSED.value}",
            (now_ms, now_ms),
        )
        return cursor.rowcount


# --- outcomes -------------------------------------------------------------------------------

_SENT_SQL = (
    f"UPDATE requests SET status = {Status.SENT.value}, message_id = ?, attempts = ?,"
    " sent_at = ?, error = NULL, failure_kind = NULL, updated_at = ?"
    f" WHERE id = ? AND status = {Status.PROCESSED.value}"
)
_FAILED_SQL = (
    f"UPDATE requests SET status = {Status.FAILED.value}, error = ?, failure_kind = ?,"
    f" attempts = ?, updated_at = ? WHERE id = ? AND status = {Status.PROCESSED.value}"
)
# A retry or a deferral puts the email back in the queue, unless its topic was cancelled.
_RETRY_SQL = (
    f"UPDATE requests SET status = {_REQUEUED_STATUS}, error = ?, attempts = ?, due_at = ?,"
    f" updated_at = ? WHERE id = ? AND status = {Status.PROCESSED.value}"
)
_DEFERRED_SQL = (
    f"UPDATE requests SET status = {_REQUEUED_STATUS}, due_at = ?, updated_at = ?"
    f" WHERE id = ? AND status = {Status.PROCESSED.value}"
)
_STOPPED_SQL = (
    f"UPDATE requests SET status = {Status.STOPPED.value}, updated_at = ?"
    f" WHERE id = ? AND status IN ({Status.CREATED.value}, {Status.PROCESSED.value})"
)


# The common outcome of a batch, applied as one statement: the rows travel as one JSON array of
# [message_id, attempts, sent_at, request_id]. ``executemany`` steps once per row and the sqlite3
# module releases and re-takes the GIL around every step, so next to a busy event loop each row
# waited its turn for the GIL; one statement waits once. The status triggers still fire once per
# changed row, exactly as with one UPDATE per row. ``json_extract`` rather than ``->>``, which
# needs SQLite 3.38 (``UPDATE ... FROM`` needs 3.33, ``RETURNING`` elsewhere 3.35).
_SENT_BATCH_SQL = (
    f"UPDATE requests SET status = {Status.SENT.value},"
    " message_id = json_extract(sent.value, '$[0]'), attempts = json_extract(sent.value, '$[1]'),"
    " sent_at = json_extract(sent.value, '$[2]'), error = NULL, failure_kind = NULL,"
    " updated_at = ? FROM json_each(?) AS sent"
    " WHERE requests.id = json_extract(sent.value, '$[3]')"
    f" AND requests.status = {Status.PROCESSED.value}"
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


def record_outcomes(
    connection: sqlite3.Connection, outcomes: Sequence[Outcome], now_ms: int
) -> int:
    """Bulk-apply outcomes in one transaction; on failure, fall back to one row at a time.

    Returns how many outcomes could not be written even alone (they are logged): the email
    stays ``Processed`` and is sent again after the next restart (at-least-once).
    """
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for outcome in outcomes:
        sql, parameters = _outcome_statement(outcome, now_ms)
        grouped.setdefault(sql, []).append(parameters)
    sent: list[tuple[Any, ...]] = []
    if len({outcome.request_id for outcome in outcomes}) == len(outcomes):
        # Only when every email appears once: with one UPDATE per row, an email named twice gets
        # the first of its outcomes (it is no longer Processed for the next), whereas a join
        # would pick either and the groups run in another order.
        sent = grouped.pop(_SENT_SQL, [])
    try:
        with transaction(connection):
            if sent:
                connection.execute(
                    _SENT_BATCH_SQL,
                    (now_ms, json.dumps([[row[0], row[1], row[2], row[4]] for row in sent])),
                )
            for sql, rows in grouped.items():
                connection.executemany(sql, rows)
        return 0
    except sqlite3.OperationalError:
        raise  # the database itself is unavailable: the caller keeps the batch and retries
    except sqlite3.DatabaseError:
        logger.warning("bulk outcome update failed; writing %d outcomes one by one", len(outcomes))
    failed = 0
    for outcome in outcomes:
        sql, parameters = _outcome_statement(outcome, now_ms)
        try:
            with transaction(connection):
                connection.execute(sql, parameters)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            failed += 1
            logger.exception("could not record outcome for request %d", outcome.request_id)
    return failed


def record_outcome_batches(
    connection: sqlite3.Connection, batches: Sequence[Sequence[Outcome]], now_ms: int
) -> tuple[int, int]:
    """:func:`record_outcomes` of each batch in turn (one transaction each). Returns how many
    batches were written and how many outcomes could not be written even alone, in all.

    A batch the database refuses ends the call; when batches were written before it, it returns
    (the caller writes the rest again) rather than raise, so that no batch is ever written
    twice: an outcome that put its email back in the queue (``Retry``, ``Deferred``) would apply
    again to that email once it is claimed anew. Raises when the first batch is refused."""
    unwritten = 0
    for index, batch in enumerate(batches):
        try:
            unwritten += record_outcomes(connection, batch, now_ms)
        except sqlite3.Error:
            if index == 0:
                raise
            return index, unwritten
    return len(batches), unwritten


# --- cancellation ---------------------------------------------------------------------------


def max_request_id(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT MAX(id) FROM requests").fetchone()
    return int(row[0] or 0)


def stop_topic(
    connection: sqlite3.Connection,
    topic_id: str,
    up_to_id: int,
    keep: Sequence[int],
    now_ms: int,
) -> int:
    """Record the cancellation (the highest ``up_to_id`` wins on repeats) and stop the topic's
    unsent emails up to it, except ``keep``, in one transaction; return how many were stopped.

    The kept emails are with the provider right now; if their send fails transiently, the
    recorded cancellation makes the retry stop them rather than requeue them.
    """
    with transaction(connection):
        connection.execute(
            "INSERT INTO topic_cancellations (topic_id, up_to_id, cancelled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (topic_id) DO UPDATE SET up_to_id = MAX(up_to_id, excluded.up_to_id),"
            " cancelled_at = excluded.cancelled_at",
            (topic_id, up_to_id, now_ms),
        )
        connection.execute("CREATE TEMP TABLE IF NOT EXISTS stop_keep (id INTEGER PRIMARY KEY)")
        connection.execute("DELETE FROM stop_keep")
        connection.executemany(
            "INSERT OR IGNORE INTO stop_keep (id) VALUES (?)", ((i,) for i in keep)
        )
        stopped = 0
        for status in (Status.CREATED, Status.PROCESSED, Status.HELD):
            cursor = connection.execute(
                f"UPDATE requests SET status = {Status.STOPPED.value}, updated_at = ?"
                f" WHERE topic_id = ? AND status = {status.value} AND id <= ?"
                " AND id NOT IN (SELECT id FROM stop_keep)",
                (now_ms, topic_id, up_to_id),
            )
            stopped += cursor.rowcount
        connection.execute("DELETE FROM stop_keep")
    return stopped


def cancellations(connection: sqlite3.Connection) -> dict[str, int]:
    """Every cancelled topic with the highest request id its cancellation covers."""
    return {
        str(topic_id): int(up_to_id)
        for topic_id, up_to_id in connection.execute(
            "SELECT topic_id, up_to_id FROM topic_cancellations"
        )
    }


# --- results -------------------------------------------------------------------------------


def record_feedback(
    connection: sqlite3.Connection,
    items: Sequence[FeedbackItem],
    suppress_after_transient: int,
    now_ms: int,
) -> list[FeedbackReport]:
    """Apply a group of feedback items in one transaction (see :class:`FeedbackItem`); return
    one report per item, in order, so each caller of a group commit learns its own outcome."""
    reports: list[FeedbackReport] = []
    with transaction(connection):
        for item in items:
            matched = suppressed = 0
            if item.source_id is not None:
                cursor = connection.execute(
                    "INSERT OR IGNORE INTO sns_messages (message_id, received_at) VALUES (?, ?)",
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
                count = connection.execute(
                    "INSERT INTO address_bounces (email, transient, last_at) VALUES (?, 1, ?)"
                    " ON CONFLICT (email) DO UPDATE SET transient = transient + 1,"
                    " last_at = excluded.last_at RETURNING transient",
                    (email.lower(), now_ms),
                ).fetchone()[0]
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


def _record_event(connection: sqlite3.Connection, event: ResultEvent) -> int:
    """Record one result (once per email and type, with a repeat counter); 1 if its email was
    found, else 0."""
    match = None
    if event.message_id:
        match = connection.execute(
            "SELECT id, topic_id FROM requests WHERE message_id = ? LIMIT 1", (event.message_id,)
        ).fetchone()
    if match is None and event.request_id is not None:
        match = connection.execute(
            "SELECT id, topic_id FROM requests WHERE id = ?", (event.request_id,)
        ).fetchone()
    if match is None:
        return 0
    connection.execute(
        clicks.RESULT_UPSERT,
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


def _suppress(connection: sqlite3.Connection, suppression: Suppression, now_ms: int) -> int:
    """Insert a suppression (the first reason for an address is kept); return 1 if new."""
    email = suppression.email
    if email is None and suppression.request_id is not None:
        row = connection.execute(
            "SELECT email FROM requests WHERE id = ?", (suppression.request_id,)
        ).fetchone()
        email = None if row is None else row[0]
    if not email:
        return 0
    cursor = connection.execute(
        "INSERT OR IGNORE INTO suppressions (email, reason, source, detail, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (email.lower(), suppression.reason, suppression.source, suppression.detail, now_ms),
    )
    return cursor.rowcount


def put_suppression(
    connection: sqlite3.Connection, suppression: Suppression, now_ms: int
) -> SuppressionEntry:
    """Add or replace a suppression (manual entries overwrite the reason)."""
    assert suppression.email is not None
    email = suppression.email.lower()
    with transaction(connection):
        connection.execute(
            "INSERT INTO suppressions (email, reason, source, detail, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET reason = excluded.reason,"
            " source = excluded.source, detail = excluded.detail",
            (email, suppression.reason, suppression.source, suppression.detail, now_ms),
        )
    entry = get_suppression(connection, email)
    assert entry is not None
    return entry


def get_suppression(connection: sqlite3.Connection, email: str) -> SuppressionEntry | None:
    row = connection.execute(
        "SELECT email, reason, source, detail, created_at FROM suppressions WHERE email = ?",
        (email.lower(),),
    ).fetchone()
    return None if row is None else SuppressionEntry(*row)


def delete_suppression(connection: sqlite3.Connection, email: str) -> bool:
    with transaction(connection):
        cursor = connection.execute("DELETE FROM suppressions WHERE email = ?", (email.lower(),))
        connection.execute("DELETE FROM address_bounces WHERE email = ?", (email.lower(),))
    return cursor.rowcount > 0


def list_suppressions(
    connection: sqlite3.Connection, email_contains: str | None, after: str | None, limit: int
) -> list[SuppressionEntry]:
    """A page of suppressions ordered by address; ``after`` is the last address of the previous
    page (keyset pagination: stable under concurrent inserts)."""
    clauses: list[str] = []
    parameters: list[Any] = []
    if email_contains:
        escaped = email_contains.lower().replace("\\", "\\\\").replace("%", "\\%")
        escaped = escaped.replace("_", "\\_")
        clauses.append("email LIKE ? ESCAPE '\\'")
        parameters.append(f"%{escaped}%")
    if after:
        clauses.append("email > ?")
        parameters.append(after.lower())
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(
        f"SELECT email, reason, source, detail, created_at FROM suppressions {where}"
        " ORDER BY email LIMIT ?",
        (*parameters, limit),
    ).fetchall()
    return [SuppressionEntry(*row) for row in rows]


def retry_failed(connection: sqlite3.Connection, topic_id: str, now_ms: int) -> int:
    """Requeue the topic's emails that failed for transient reasons or could not be composed
    (not permanent rejections); their attempt counter starts again so they get the full
    MAX_ATTEMPTS."""
    with transaction(connection):
        cursor = connection.execute(
            f"UPDATE requests SET status = {Status.CREATED.value}, attempts = 0, due_at = ?,"
            " updated_at = ?, failure_kind = NULL"
            f" WHERE topic_id = ? AND status = {Status.FAILED.value}"
            f" AND failure_kind IN ('{FailureKind.EXHAUSTED.value}', '{FailureKind.CONFIG.value}')",
            (now_ms, now_ms, topic_id),
        )
        return cursor.rowcount


def prune_before(connection: sqlite3.Connection, before_ms: int) -> tuple[int, int]:
    """Forget SNS message ids and idempotency keys older than the dedup windows."""
    with transaction(connection):
        sns = connection.execute(
            "DELETE FROM sns_messages WHERE received_at < ?", (before_ms,)
        ).rowcount
        keys = connection.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ?", (before_ms,)
        ).rowcount
    return sns, keys


# --- reads ----------------------------------------------------------------------------------


def topic_stats(connection: sqlite3.Connection, topic_id: str) -> TopicStats:
    request_counts = {
        Status(status).label: count
        for status, count in connection.execute(
            "SELECT status, count FROM topic_counts WHERE topic_id = ? AND count > 0", (topic_id,)
        )
    }
    result_counts = {
        event_type: count
        for event_type, count in connection.execute(
            "SELECT event_type, count FROM topic_result_counts WHERE topic_id = ? AND count > 0",
            (topic_id,),
        )
    }
    return TopicStats(
        request_counts=request_counts,
        result_counts=result_counts,
        total_clicks=clicks.topic_total_clicks(connection, topic_id),
    )


def recent_topics(connection: sqlite3.Connection, limit: int) -> list[TopicSummary]:
    rows = connection.execute(
        "SELECT topic_id, created_at, updated_at FROM topics ORDER BY updated_at DESC, topic_id"
        " LIMIT ?",
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


def count_sent_since(connection: sqlite3.Connection, since_ms: int) -> int:
    """Whole minutes from the buckets, the partial first minute exactly from the index."""
    first_full_minute = -(-since_ms // 60_000)
    buckets = connection.execute(
        "SELECT COALESCE(SUM(count), 0) FROM sent_minutes WHERE minute >= ?", (first_full_minute,)
    ).fetchone()[0]
    edge = connection.execute(
        "SELECT COUNT(*) FROM requests WHERE sent_at >= ? AND sent_at < ?"
        f" AND status = {Status.SENT.value}",
        (since_ms, first_full_minute * 60_000),
    ).fetchone()[0]
    return int(buckets) + int(edge)


def queued_count(connection: sqlite3.Connection) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(count), 0) FROM topic_counts"
        f" WHERE status IN ({Status.CREATED.value}, {Status.PROCESSED.value})"
    ).fetchone()
    return int(row[0])


def request_detail(connection: sqlite3.Connection, request_id: int) -> RequestDetail | None:
    row = connection.execute(
        "SELECT r.id, r.topic_id, r.email, r.status, r.attempts, r.message_id, r.error,"
        " r.failure_kind, r.created_at, r.updated_at, r.due_at, r.sent_at, r.api_key_id,"
        " c.sender FROM requests AS r JOIN contents AS c ON c.id = r.content_id WHERE r.id = ?",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    events = tuple(
        EventRecord(event_type=r[0], count=r[1], first_at_ms=r[2], last_at_ms=r[3], detail=r[4])
        for r in connection.execute(
            "SELECT event_type, count, first_at, last_at, detail FROM results"
            " WHERE request_id = ? ORDER BY first_at, id",
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


def ping(connection: sqlite3.Connection) -> None:
    connection.execute("SELECT 1 FROM requests LIMIT 1").fetchall()


def statuses(connection: sqlite3.Connection, ids: Iterable[int]) -> dict[int, Status]:
    """Test and tooling helper: the status of each given request."""
    result: dict[int, Status] = {}
    ordered = sorted(ids)
    for chunk in chunks(ordered):
        for request_id, status in connection.execute(
            f"SELECT id, status FROM requests WHERE id IN ({placeholders(len(chunk))})", chunk
        ):
            result[request_id] = Status(status)
    return result


# -- service secrets (see sesender.store.service_secrets) ---------------------------------------


def ensure_service_secret(
    connection: sqlite3.Connection, name: str, candidate: bytes, now_ms: int
) -> bytes:
    """Store ``candidate`` under ``name`` unless a value is there; return the stored value.

    One transaction, so two processes starting at once on one database agree on one value.
    """
    with transaction(connection):
        connection.execute(
            "INSERT INTO service_secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, candidate, now_ms),
        )
        row = connection.execute(
            "SELECT value FROM service_secrets WHERE name = ?", (name,)
        ).fetchone()
    return bytes(row[0])


def service_secret(connection: sqlite3.Connection, name: str) -> bytes | None:
    row = connection.execute("SELECT value FROM service_secrets WHERE name = ?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


def replace_service_secret(
    connection: sqlite3.Connection, name: str, value: bytes, now_ms: int
) -> None:
    with transaction(connection):
        connection.execute(
            "INSERT INTO service_secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
            " created_at = excluded.created_at",
            (name, value, now_ms),
        )


# -- named API keys (see sesender.api_keys) ------------------------------------------------------

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
        last_used_at_ms=row[7],
        revoked_at_ms=row[8],
    )


def create_api_key(connection: sqlite3.Connection, key: NewApiKey) -> ApiKey:
    with transaction(connection):
        row = connection.execute(
            "INSERT INTO api_keys (name, scopes, senders, prefix, digest, created_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) RETURNING {_API_KEY_COLUMNS}",
            (
                key.name,
                ",".join(sorted(key.scopes)),
                None if key.senders is None else json.dumps(list(key.senders)),
                key.prefix,
                key.digest,
                key.created_at_ms,
            ),
        ).fetchone()
    return _api_key(row)


def api_keys(connection: sqlite3.Connection, include_revoked: bool) -> list[ApiKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return [
        _api_key(row)
        for row in connection.execute(f"SELECT {_API_KEY_COLUMNS} FROM api_keys{where} ORDER BY id")
    ]


def revoke_api_key(connection: sqlite3.Connection, key_id: int, now_ms: int) -> ApiKey | None:
    """Revoke the key (the first revocation's time is kept); None when there is no such key."""
    with transaction(connection):
        row = connection.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"
            f" RETURNING {_API_KEY_COLUMNS}",
            (now_ms, key_id),
        ).fetchone()
    return None if row is None else _api_key(row)


def touch_api_keys(connection: sqlite3.Connection, used: Sequence[tuple[int, int]]) -> None:
    """Record when keys were last used: (key id, Unix ms) pairs; an older time changes nothing."""
    with transaction(connection):
        connection.executemany(
            "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
            ((at, key_id) for key_id, at in used),
        )
