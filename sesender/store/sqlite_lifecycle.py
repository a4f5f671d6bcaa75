"""Retention, reclaiming space and storage figures on SQLite (synchronous; in the store lanes).

Why it works the way it does:

- **Pruning walks the emails by id** on a reader connection (:func:`find_prunable`, which never
  holds up a write), ``scan_limit`` rows per snapshot, and collects those in a final state (Sent,
  Failed, Stopped, Suppressed) whose last change is older than the cutoff; the writer deletes
  them in short transactions of a batch each (:func:`delete_emails`, which checks the conditions
  again). Ids grow with submission time, so the walk stops at the first email created after the
  cutoff: no index on age is needed (an index would cost every email bytes and insert time,
  forever, to serve one hourly job).
- **Counters are untouched**: ``topic_counts``, ``topic_result_counts`` and ``sent_minutes`` are
  kept by triggers on INSERT and UPDATE only, and nothing here updates them, so topic statistics and
  sent counts stay what they were.
- **Only per-email rows go**: the email, its rows in :data:`PER_EMAIL_TABLES`, and a content once
  no email uses it (``contents.refs``). Suppressions, topics, cancellations, counters never.
- **Click links keep redirecting**: a content's tracked links (``links``) are kept when it goes
  (a URL per link), and the pruned click-tracked emails are remembered as ranges of consecutive
  ids with their content (``click_ranges``, :func:`sesender.store.sqlite_clicks.remember_pruned`;
  a bulk message pruned batch after batch stays one row), so an old click link still finds its
  URL, and records nothing. Kept links are keyed by content id, so a content id must never be
  given twice: the unused content with the highest id is spared until a newer one exists
  (SQLite gives a new row ``MAX(id) + 1``, as for emails below).
- **The highest id is never pruned**: SQLite gives a new row ``MAX(id) + 1``, so deleting the newest
  email would let the next submission reuse its id, and an old tracking token would then count an
  open (or an unsubscribe) against a stranger's email.
- **Pruned ids are remembered as ranges** in ``pruned_requests`` (one row per housekeeping run):
  every id in a run's range that no longer exists was pruned (nothing else deletes emails), so
  ``GET /v1/messages/{id}`` can answer 410 for those and 404 for ids never issued.
- **Space is given back** with ``PRAGMA incremental_vacuum`` in small steps: the file shrinks
  without the long exclusive lock of a ``VACUUM``. That needs ``auto_vacuum = INCREMENTAL``, which
  a database created by sesender has; an older file is switched once at start by
  :func:`ensure_incremental_auto_vacuum` (one ``VACUUM``).

Everything SQLite-specific about the data lifecycle is in this module and
:mod:`sesender.store.sqlite_backup`; the SQL of :func:`prune_batch` is plain enough to port.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sesender.models import PruneBatch, PruneScan, Status, StorageStats
from sesender.store import sqlite_clicks as clicks
from sesender.store.sqlite_queries import chunks, placeholders, transaction

#: The states an email never leaves: only these are pruned.
FINAL_STATUSES = frozenset({Status.SENT, Status.FAILED, Status.STOPPED, Status.SUPPRESSED})

#: Tables with rows per email, keyed by ``request_id``: deleted with their email (before it: they
#: reference it). A table of per-email rows added later belongs here.
PER_EMAIL_TABLES: tuple[str, ...] = ("results", "email_link_clicks")

#: ``lifecycle_counters`` names.
EMAILS_PRUNED = "emails_pruned"
RESULTS_PRUNED = "results_pruned"
CONTENTS_PRUNED = "contents_pruned"
LAST_PRUNE_AT = "last_prune_at"
LAST_BACKUP_AT = "last_backup_at"
#: The unused content kept because it has the highest id (see :func:`delete_emails`).
SPARED_CONTENT = "spared_content_id"

#: The tables whose rows the storage figures report.
REPORTED_TABLES = ("requests", "results", "contents", "suppressions", "topics")


def find_prunable(
    connection: sqlite3.Connection, before_ms: int, after_id: int, scan_limit: int
) -> PruneScan:
    """Walk up to ``scan_limit`` emails after ``after_id`` (one read snapshot, on a reader: it
    never holds up a write) and return the ids of those old enough to prune."""
    final = ",".join(str(status.value) for status in sorted(FINAL_STATUSES))
    connection.execute("BEGIN")
    try:
        highest = int(connection.execute("SELECT MAX(id) FROM requests").fetchone()[0] or 0)
        boundary = connection.execute(
            "SELECT id, created_at FROM requests WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
            (after_id, scan_limit - 1),
        ).fetchone()
        if boundary is None:
            upper, done = highest, True
        else:
            # Ids grow with submission time: past the first email created after the cutoff,
            # nothing can be old enough.
            upper, done = int(boundary[0]), int(boundary[1]) >= before_ms
        candidates = tuple(
            int(row[0])
            for row in connection.execute(
                "SELECT id FROM requests WHERE id > ? AND id <= ? AND id < ?"
                f" AND status IN ({final}) AND updated_at < ? AND created_at < ? ORDER BY id",
                (after_id, upper, highest, before_ms, before_ms),
            )
        )
    finally:
        connection.execute("COMMIT")
    return PruneScan(candidates=candidates, next_after_id=max(after_id, upper), done=done)


def delete_emails(
    connection: sqlite3.Connection,
    request_ids: Sequence[int],
    before_ms: int,
    range_first_id: int | None,
    now_ms: int,
) -> PruneBatch:
    """Delete the given emails that are (still) final, old enough and not the newest, with their
    per-email rows and unused contents, in one short transaction (the conditions are checked
    again here: the scan ran on a reader, and the email may have changed since)."""
    final = ",".join(str(status.value) for status in sorted(FINAL_STATUSES))
    with transaction(connection):
        highest = int(connection.execute("SELECT MAX(id) FROM requests").fetchone()[0] or 0)
        uses: Counter[int] = Counter()
        victims: list[int] = []
        tracked: list[tuple[int, int]] = []
        for chunk in chunks(sorted(request_ids)):
            for request_id, content_id, track_clicks in connection.execute(
                "SELECT id, content_id, track_clicks FROM requests"
                f" WHERE id IN ({placeholders(len(chunk))})"
                f" AND status IN ({final}) AND updated_at < ? AND id < ? ORDER BY id",
                (*chunk, before_ms, highest),
            ):
                victims.append(int(request_id))
                uses[int(content_id)] += 1
                if track_clicks == 1:
                    tracked.append((int(request_id), int(content_id)))
        victims.sort()
        # Their click links keep redirecting: which content each had is remembered.
        clicks.remember_pruned(connection, sorted(tracked))
        results = contents = 0
        for chunk in chunks(victims):
            marks = placeholders(len(chunk))
            for table in PER_EMAIL_TABLES:
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE request_id IN ({marks})", chunk
                )
                if table == "results":
                    results += cursor.rowcount
            connection.execute(f"DELETE FROM requests WHERE id IN ({marks})", chunk)
        if uses:
            connection.executemany(
                "UPDATE contents SET refs = refs - ? WHERE id = ?",
                ((count, content_id) for content_id, count in uses.items()),
            )
        # A content's tracked links outlive it (small, and its old click links must still
        # redirect), so a content id must never be given twice: SQLite gives a new row
        # MAX(id) + 1, so the content with the highest id is spared while it is the highest,
        # and deleted by a later batch once a newer content exists.
        spared = counters(connection).get(SPARED_CONTENT)
        candidates = sorted({*uses, *([spared] if spared is not None else [])})
        if candidates:
            newest = int(connection.execute("SELECT MAX(id) FROM contents").fetchone()[0] or 0)
            for chunk in chunks(candidates):
                contents += connection.execute(
                    f"DELETE FROM contents WHERE id IN ({placeholders(len(chunk))})"
                    " AND refs <= 0 AND id < ?",
                    (*chunk, newest),
                ).rowcount
            unused_newest = connection.execute(
                "SELECT 1 FROM contents WHERE id = ? AND refs <= 0", (newest,)
            ).fetchone()
            if unused_newest is not None:
                set_counter(connection, SPARED_CONTENT, newest)
            elif spared is not None:
                connection.execute(
                    "DELETE FROM lifecycle_counters WHERE name = ?", (SPARED_CONTENT,)
                )
        if victims:
            if range_first_id is None:
                range_first_id = victims[0]
                connection.execute(
                    "INSERT INTO pruned_requests (first_id, last_id, pruned_at) VALUES (?, ?, ?)",
                    (range_first_id, victims[-1], now_ms),
                )
            else:
                connection.execute(
                    "UPDATE pruned_requests SET last_id = MAX(last_id, ?), pruned_at = ?"
                    " WHERE first_id = ?",
                    (victims[-1], now_ms, range_first_id),
                )
            _add(connection, EMAILS_PRUNED, len(victims))
            _add(connection, RESULTS_PRUNED, results)
            _add(connection, CONTENTS_PRUNED, contents)
    return PruneBatch(
        emails=len(victims), results=results, contents=contents, range_first_id=range_first_id
    )


def lowest_request_id(connection: sqlite3.Connection) -> int:
    """Where a pruning run starts: the lowest stored id (0 when there is none)."""
    return int(connection.execute("SELECT MIN(id) FROM requests").fetchone()[0] or 0)


def finish_prune(connection: sqlite3.Connection, now_ms: int) -> None:
    """Record that a pruning run completed (``last_prune_at``)."""
    with transaction(connection):
        set_counter(connection, LAST_PRUNE_AT, now_ms)


def record_backup(connection: sqlite3.Connection, now_ms: int) -> None:
    """Record that a verified backup was written (``last_backup_at``)."""
    with transaction(connection):
        set_counter(connection, LAST_BACKUP_AT, now_ms)


def _add(connection: sqlite3.Connection, name: str, amount: int) -> None:
    connection.execute(
        "INSERT INTO lifecycle_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, amount),
    )


def set_counter(connection: sqlite3.Connection, name: str, value: int) -> None:
    connection.execute(
        "INSERT INTO lifecycle_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def counters(connection: sqlite3.Connection) -> dict[str, int]:
    return {
        str(name): int(value)
        for name, value in connection.execute("SELECT name, value FROM lifecycle_counters")
    }


def was_pruned(connection: sqlite3.Connection, request_id: int) -> bool:
    """Whether a missing email's id lies in a range pruning walked (so it was pruned)."""
    row = connection.execute(
        "SELECT 1 FROM pruned_requests WHERE first_id <= ? AND last_id >= ? LIMIT 1",
        (request_id, request_id),
    ).fetchone()
    return row is not None


# --- space --------------------------------------------------------------------------------------


def ensure_incremental_auto_vacuum(connection: sqlite3.Connection) -> bool:
    """Switch a database made without ``auto_vacuum = INCREMENTAL`` to it (one ``VACUUM``, which
    rewrites the file and needs about its size again in free disk space); True if it did."""
    mode = int(connection.execute("PRAGMA auto_vacuum").fetchone()[0])
    if mode == 2:
        return False
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("VACUUM")
    return True


def incremental_vacuum(connection: sqlite3.Connection, pages: int) -> tuple[int, int]:
    """Give up to ``pages`` free pages back to the file system (one short write); returns
    (pages freed, free pages left)."""
    before = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
    connection.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    after = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
    return before - after, after


# --- figures ------------------------------------------------------------------------------------


def file_bytes(path: Path) -> int:
    """The database's bytes on disk: the file, its write-ahead log and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            continue
    return total


def disk_free_bytes(path: Path) -> int | None:
    """Free bytes (for an unprivileged user) on the file system holding ``path``."""
    try:
        return shutil.disk_usage(path.parent if str(path.parent) else Path(".")).free
    except OSError:
        return None


def storage_stats(connection: sqlite3.Connection, path: Path) -> StorageStats:
    """Sizes, rows per main table and the lifecycle counters (one read transaction)."""
    connection.execute("BEGIN")
    try:
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
        free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
        kept = counters(connection)
        # Emails and results from the counters the triggers keep, minus what was pruned: a
        # COUNT(*) would read every row of the two biggest tables at each scrape.
        stored = connection.execute("SELECT COALESCE(SUM(count), 0) FROM topic_counts").fetchone()
        results = connection.execute(
            "SELECT COALESCE(SUM(count), 0) FROM topic_result_counts"
        ).fetchone()
        rows = {
            "requests": int(stored[0]) - kept.get(EMAILS_PRUNED, 0),
            "results": int(results[0]) - kept.get(RESULTS_PRUNED, 0),
        }
        for table in REPORTED_TABLES[2:]:
            rows[table] = int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        connection.execute("COMMIT")
    return StorageStats(
        database_bytes=pages * page_size,
        free_bytes=free * page_size,
        file_bytes=file_bytes(path),
        rows=rows,
        emails_pruned=kept.get(EMAILS_PRUNED, 0),
        last_prune_at_ms=kept.get(LAST_PRUNE_AT),
        last_backup_at_ms=kept.get(LAST_BACKUP_AT),
    )
