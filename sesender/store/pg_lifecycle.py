"""Retention and storage figures on PostgreSQL: the twin of :mod:`sesender.store.sqlite_lifecycle`.

The same walk by id (ids grow with submission time; no index on age), the same deletes of
per-email rows only, the same ranges of pruned ids and counters, so the statistics survive exactly
as on SQLite: PostgreSQL's counter triggers fire on UPDATE and INSERT only. What differs:

- the candidates are locked ``FOR UPDATE SKIP LOCKED`` before they are deleted: an email another
  instance is updating right now is left for the next run instead of waited for, and two
  instances pruning at once never delete (or count) one email twice;
- no content is spared to keep ids unique (an identity column never gives one twice);
- there is no vacuum step: autovacuum makes the space of deleted rows reusable by new ones (the
  files do not shrink; ``VACUUM FULL`` or ``pg_repack`` would, with locks an operator chooses);
- sizes come from ``pg_database_size``; the disk holding it is the server's, not this process's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg

from sesender.models import PruneBatch, PruneScan, StorageStats
from sesender.store import pg_clicks as clicks
from sesender.store.sqlite_lifecycle import (
    CONTENTS_PRUNED,
    EMAILS_PRUNED,
    FINAL_STATUSES,
    LAST_BACKUP_AT,
    LAST_PRUNE_AT,
    PER_EMAIL_TABLES,
    REPORTED_TABLES,
    RESULTS_PRUNED,
)

Connection = psycopg.Connection[tuple[Any, ...]]

_FINAL = ",".join(str(status.value) for status in sorted(FINAL_STATUSES))


def lowest_request_id(connection: Connection) -> int:
    row = connection.execute("SELECT MIN(id) FROM requests").fetchone()
    return int(row[0] or 0) if row else 0


def find_prunable(
    connection: Connection, before_ms: int, after_id: int, scan_limit: int
) -> PruneScan:
    with connection.transaction():
        row = connection.execute("SELECT MAX(id) FROM requests").fetchone()
        highest = int(row[0] or 0) if row else 0
        boundary = connection.execute(
            "SELECT id, created_at FROM requests WHERE id > %s ORDER BY id LIMIT 1 OFFSET %s",
            (after_id, scan_limit - 1),
        ).fetchone()
        if boundary is None:
            upper, done = highest, True
        else:
            upper, done = int(boundary[0]), int(boundary[1]) >= before_ms
        candidates = tuple(
            int(found[0])
            for found in connection.execute(
                "SELECT id FROM requests WHERE id > %s AND id <= %s AND id < %s"
                f" AND status IN ({_FINAL}) AND updated_at < %s AND created_at < %s ORDER BY id",
                (after_id, upper, highest, before_ms, before_ms),
            )
        )
    return PruneScan(candidates=candidates, next_after_id=max(after_id, upper), done=done)


def delete_emails(
    connection: Connection,
    request_ids: Sequence[int],
    before_ms: int,
    range_first_id: int | None,
    now_ms: int,
) -> PruneBatch:
    with connection.transaction():
        locked = connection.execute(
            "SELECT id, content_id, track_clicks FROM requests WHERE id = ANY(%s)"
            f" AND status IN ({_FINAL}) AND updated_at < %s"
            " AND id < (SELECT MAX(id) FROM requests) ORDER BY id FOR UPDATE SKIP LOCKED",
            (list(request_ids), before_ms),
        ).fetchall()
        victims = [int(row[0]) for row in locked]
        uses = Counter(int(row[1]) for row in locked)
        results = contents = 0
        if victims:
            # Their click links keep redirecting: which content each had is remembered.
            clicks.remember_pruned(
                connection, [(int(row[0]), int(row[1])) for row in locked if row[2] == 1]
            )
            for table in PER_EMAIL_TABLES:
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE request_id = ANY(%s)", (victims,)
                )
                if table == "results":
                    results += cursor.rowcount
            connection.execute("DELETE FROM requests WHERE id = ANY(%s)", (victims,))
            ordered = sorted(uses.items())
            connection.execute(
                "UPDATE contents SET refs = contents.refs - u.n"
                " FROM unnest(%s::bigint[], %s::bigint[]) AS u (id, n) WHERE contents.id = u.id",
                ([content for content, _ in ordered], [count for _, count in ordered]),
            )
            # A content's tracked links outlive it (its old click links still redirect); an
            # identity column never gives an id twice, so no new content meets them.
            contents = connection.execute(
                "DELETE FROM contents WHERE id = ANY(%s) AND refs <= 0",
                ([content for content, _ in ordered],),
            ).rowcount
            if range_first_id is None:
                range_first_id = victims[0]
                connection.execute(
                    "INSERT INTO pruned_requests (first_id, last_id, pruned_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (first_id) DO UPDATE"
                    " SET last_id = GREATEST(pruned_requests.last_id, excluded.last_id)",
                    (range_first_id, victims[-1], now_ms),
                )
            else:
                connection.execute(
                    "UPDATE pruned_requests SET last_id = GREATEST(last_id, %s), pruned_at = %s"
                    " WHERE first_id = %s",
                    (victims[-1], now_ms, range_first_id),
                )
            for name, amount in (
                (EMAILS_PRUNED, len(victims)),
                (RESULTS_PRUNED, results),
                (CONTENTS_PRUNED, contents),
            ):
                _add(connection, name, amount)
    return PruneBatch(
        emails=len(victims), results=results, contents=contents, range_first_id=range_first_id
    )


def _add(connection: Connection, name: str, amount: int) -> None:
    connection.execute(
        "INSERT INTO lifecycle_counters (name, value) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = lifecycle_counters.value + excluded.value",
        (name, amount),
    )


def set_counter(connection: Connection, name: str, value: int) -> None:
    connection.execute(
        "INSERT INTO lifecycle_counters (name, value) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def finish_prune(connection: Connection, now_ms: int) -> None:
    set_counter(connection, LAST_PRUNE_AT, now_ms)


def was_pruned(connection: Connection, request_id: int) -> bool:
    row = connection.execute(
        "SELECT 1 FROM pruned_requests WHERE first_id <= %s AND last_id >= %s LIMIT 1",
        (request_id, request_id),
    ).fetchone()
    return row is not None


def storage_stats(connection: Connection) -> StorageStats:
    with connection.transaction():
        size_row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        size = int(size_row[0]) if size_row else 0
        kept = {
            str(name): int(value)
            for name, value in connection.execute("SELECT name, value FROM lifecycle_counters")
        }
        stored = connection.execute("SELECT COALESCE(SUM(count), 0) FROM topic_counts").fetchone()
        results = connection.execute(
            "SELECT COALESCE(SUM(count), 0) FROM topic_result_counts"
        ).fetchone()
        rows = {
            "requests": int(stored[0] if stored else 0) - kept.get(EMAILS_PRUNED, 0),
            "results": int(results[0] if results else 0) - kept.get(RESULTS_PRUNED, 0),
        }
        for table in REPORTED_TABLES[2:]:
            counted = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            rows[table] = int(counted[0]) if counted else 0
    return StorageStats(
        database_bytes=size,
        free_bytes=0,
        file_bytes=size,
        rows=rows,
        emails_pruned=kept.get(EMAILS_PRUNED, 0),
        last_prune_at_ms=kept.get(LAST_PRUNE_AT),
        last_backup_at_ms=kept.get(LAST_BACKUP_AT),
    )
