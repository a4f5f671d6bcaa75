"""Click tracking's SQL on PostgreSQL: the same functions as :mod:`sesender.store.sqlite_clicks`
(read that module's docstring), written for psycopg. Each runs inside the caller's transaction
(or autocommit statement by statement for the reads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from sesender.models import ClickEvent, LinkStats, RecordedClick
from sesender.store.sqlite_clicks import MAX_USER_AGENT

Connection = psycopg.Connection[tuple[Any, ...]]

RESULT_UPSERT = (
    "INSERT INTO results (request_id, topic_id, event_type, count, first_at, last_at, detail)"
    " VALUES (%s, %s, %s, 1, %s, %s, %s) ON CONFLICT (request_id, event_type) DO UPDATE"
    " SET count = results.count + 1, last_at = GREATEST(results.last_at, excluded.last_at),"
    " detail = COALESCE(excluded.detail, results.detail)"
)


def store_links(
    connection: Connection, topic_id: str, content_id: int, urls: Sequence[str]
) -> tuple[str, ...]:
    """See :func:`sesender.store.sqlite_clicks.store_links`."""
    inserted = connection.execute(
        "INSERT INTO links (content_id, position, url)"
        " SELECT %s, u.n - 1, u.url FROM unnest(%s::text[]) WITH ORDINALITY AS u (url, n)"
        " ON CONFLICT DO NOTHING",
        (content_id, list(urls)),
    )
    stored = tuple(urls)
    if inserted.rowcount != len(stored):
        stored = tuple(
            str(row[0])
            for row in connection.execute(
                "SELECT url FROM links WHERE content_id = %s ORDER BY position", (content_id,)
            )
        )
    connection.execute(
        "INSERT INTO link_clicks (topic_id, url, unique_clicks, total_clicks)"
        " SELECT %s, u, 0, 0 FROM unnest(%s::text[]) AS u ORDER BY u ON CONFLICT DO NOTHING",
        (topic_id, sorted(set(urls))),
    )
    return stored


def click_target(connection: Connection, request_id: int, position: int) -> str | None:
    """See :func:`sesender.store.sqlite_clicks.click_target`."""
    row = connection.execute(
        "SELECT l.url FROM requests AS r JOIN links AS l"
        " ON l.content_id = r.content_id AND l.position = %s"
        " WHERE r.id = %s AND r.track_clicks = 1",
        (position, request_id),
    ).fetchone()
    if row is not None:
        return str(row[0])
    if connection.execute("SELECT 1 FROM requests WHERE id = %s", (request_id,)).fetchone():
        return None
    row = connection.execute(
        "SELECT l.url FROM (SELECT content_id, last_id FROM click_ranges WHERE first_id <= %s"
        " ORDER BY first_id DESC LIMIT 1) AS c"
        " JOIN links AS l ON l.content_id = c.content_id AND l.position = %s"
        " WHERE c.last_id >= %s",
        (request_id, position, request_id),
    ).fetchone()
    return None if row is None else str(row[0])


def remember_pruned(connection: Connection, emails: Sequence[tuple[int, int]]) -> None:
    """See :func:`sesender.store.sqlite_clicks.remember_pruned`. Two instances extending one
    range at once: the second UPDATE waits for the first's row lock, finds the range no longer
    ends where it did, and inserts its own."""
    runs: list[list[int]] = []
    for request_id, content_id in emails:
        if runs and runs[-1][1] == request_id - 1 and runs[-1][2] == content_id:
            runs[-1][1] = request_id
        else:
            runs.append([request_id, request_id, content_id])
    for first_id, last_id, content_id in runs:
        extended = connection.execute(
            "UPDATE click_ranges SET last_id = %s WHERE first_id ="
            " (SELECT MAX(first_id) FROM click_ranges WHERE first_id < %s)"
            " AND last_id = %s AND content_id = %s",
            (last_id, first_id, first_id - 1, content_id),
        ).rowcount
        if not extended:
            connection.execute(
                "INSERT INTO click_ranges (first_id, last_id, content_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (first_id) DO NOTHING",
                (first_id, last_id, content_id),
            )


def record_click(connection: Connection, click: ClickEvent) -> RecordedClick | None:
    """See :func:`sesender.store.sqlite_clicks.record_click` (the hook for per-click work)."""
    row = None
    if click.message_id:
        row = connection.execute(
            "SELECT id, topic_id, content_id, sent_at FROM requests WHERE message_id = %s LIMIT 1",
            (click.message_id,),
        ).fetchone()
    if row is None and click.request_id is not None:
        row = connection.execute(
            "SELECT id, topic_id, content_id, sent_at FROM requests WHERE id = %s",
            (click.request_id,),
        ).fetchone()
    if row is None:
        return None
    request_id, topic_id, content_id, sent_at = row
    url = click.url
    if url is None and click.position is not None:
        found = connection.execute(
            "SELECT url FROM links WHERE content_id = %s AND position = %s",
            (content_id, click.position),
        ).fetchone()
        url = None if found is None else str(found[0])
    if url is None:
        return None
    at = click.occurred_at_ms
    delay = None if sent_at is None else max(0, at - int(sent_at))
    agent = click.user_agent[:MAX_USER_AGENT] if click.user_agent else None
    counted = connection.execute(
        "INSERT INTO email_link_clicks (request_id, url, count, first_at, last_at, user_agent,"
        " delay_ms) VALUES (%s, %s, 1, %s, %s, %s, %s) ON CONFLICT (request_id, url) DO UPDATE"
        " SET count = email_link_clicks.count + 1,"
        " last_at = GREATEST(email_link_clicks.last_at, excluded.last_at) RETURNING count",
        (request_id, url, at, at, agent, delay),
    ).fetchone()
    assert counted is not None
    unique = int(counted[0]) == 1
    connection.execute(
        "INSERT INTO link_clicks (topic_id, url, unique_clicks, total_clicks)"
        " VALUES (%s, %s, %s, 1) ON CONFLICT (topic_id, url) DO UPDATE SET unique_clicks ="
        " link_clicks.unique_clicks + excluded.unique_clicks,"
        " total_clicks = link_clicks.total_clicks + 1",
        (topic_id, url, int(unique)),
    )
    detail = {"link": url, "user_agent": agent, "delay_ms": delay, "source": click.source}
    connection.execute(
        RESULT_UPSERT,
        (
            request_id,
            topic_id,
            "Click",
            at,
            at,
            json.dumps({k: v for k, v in detail.items() if v is not None}, ensure_ascii=False),
        ),
    )
    return RecordedClick(
        request_id=int(request_id), topic_id=topic_id, url=url, unique=unique, delay_ms=delay
    )


def topic_links(connection: Connection, topic_id: str) -> list[LinkStats]:
    return [
        LinkStats(url=url, unique_clicks=int(unique), total_clicks=int(total))
        for url, unique, total in connection.execute(
            "SELECT url, unique_clicks, total_clicks FROM link_clicks WHERE topic_id = %s"
            ' ORDER BY total_clicks DESC, unique_clicks DESC, url COLLATE "C"',
            (topic_id,),
        )
    ]


def topic_total_clicks(connection: Connection, topic_id: str) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(total_clicks), 0) FROM link_clicks WHERE topic_id = %s", (topic_id,)
    ).fetchone()
    return 0 if row is None else int(row[0])
