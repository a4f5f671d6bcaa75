"""Click tracking's SQL: the links of a content, the redirect target, recording a click.

Synchronous functions on one ``sqlite3.Connection``, called from the statements of
:mod:`sesender.store.sqlite_queries` (inside their transactions) and from the store's lanes. Kept
apart so that a second engine ports a small, self-contained piece, and so that what happens when a
click is recorded is in one short function, :func:`record_click` (an outbound-webhook emitter
hooks there: it has the email, the topic and the link).

Per-link counts live in ``link_clicks`` and are changed here, as each click is recorded, never
recomputed from per-email rows: pruning ``email_link_clicks`` or ``results`` leaves them intact (a
click after such pruning counts as unique again, which only happens to very old emails).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from sesender.models import ClickEvent, LinkStats, RecordedClick

#: One result per (email, event type) with a repeat counter; the latest detail wins.
RESULT_UPSERT = (
    "INSERT INTO results (request_id, topic_id, event_type, count, first_at, last_at, detail)"
    " VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (request_id, event_type) DO UPDATE"
    " SET count = count + 1, last_at = MAX(last_at, excluded.last_at),"
    " detail = COALESCE(excluded.detail, detail)"
)
#: A user agent is kept up to this many characters.
MAX_USER_AGENT = 512


def store_links(
    connection: sqlite3.Connection, topic_id: str, content_id: int, urls: Sequence[str]
) -> tuple[str, ...]:
    """Remember a content's tracked links by position (a content shared by several messages
    keeps its first list: the positions are a function of the content), and list them for the
    topic with zero clicks so ``GET /v1/topics/{id}/links`` shows links nobody clicked. Returns
    the content's links as stored (what a click on them redirects to)."""
    inserted = connection.executemany(
        "INSERT OR IGNORE INTO links (content_id, position, url) VALUES (?, ?, ?)",
        ((content_id, position, url) for position, url in enumerate(urls)),
    ).rowcount
    stored = tuple(urls)
    if inserted != len(stored):
        stored = tuple(
            str(row[0])
            for row in connection.execute(
                "SELECT url FROM links WHERE content_id = ? ORDER BY position", (content_id,)
            )
        )
    connection.executemany(
        "INSERT OR IGNORE INTO link_clicks (topic_id, url, unique_clicks, total_clicks)"
        " VALUES (?, ?, 0, 0)",
        ((topic_id, url) for url in dict.fromkeys(urls)),
    )
    return stored


def click_target(connection: sqlite3.Connection, request_id: int, position: int) -> str | None:
    """The URL of the link at ``position`` in the content of email ``request_id``, if that email
    was sent with click tracking; None otherwise. A pruned email's content is found in
    ``click_ranges`` (:func:`remember_pruned`): its links still redirect."""
    row = connection.execute(
        "SELECT l.url FROM requests AS r JOIN links AS l"
        " ON l.content_id = r.content_id AND l.position = ?"
        " WHERE r.id = ? AND r.track_clicks = 1",
        (position, request_id),
    ).fetchone()
    if row is not None:
        return str(row[0])
    if connection.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone():
        return None
    row = connection.execute(
        "SELECT l.url FROM (SELECT content_id, last_id FROM click_ranges WHERE first_id <= ?"
        " ORDER BY first_id DESC LIMIT 1) AS c"
        " JOIN links AS l ON l.content_id = c.content_id AND l.position = ?"
        " WHERE c.last_id >= ?",
        (request_id, position, request_id),
    ).fetchone()
    return None if row is None else str(row[0])


def remember_pruned(connection: sqlite3.Connection, emails: Sequence[tuple[int, int]]) -> None:
    """Remember which content the click-tracked emails about to be pruned had, as
    ``(request_id, content_id)`` pairs in id order: one ``click_ranges`` row per run of
    consecutive ids with one content, or the previous row extended when the run continues it
    (a bulk message pruned batch after batch stays one row)."""
    runs: list[list[int]] = []
    for request_id, content_id in emails:
        if runs and runs[-1][1] == request_id - 1 and runs[-1][2] == content_id:
            runs[-1][1] = request_id
        else:
            runs.append([request_id, request_id, content_id])
    for first_id, last_id, content_id in runs:
        extended = connection.execute(
            "UPDATE click_ranges SET last_id = ? WHERE first_id ="
            " (SELECT MAX(first_id) FROM click_ranges WHERE first_id < ?)"
            " AND last_id = ? AND content_id = ?",
            (last_id, first_id, first_id - 1, content_id),
        ).rowcount
        if not extended:
            connection.execute(
                "INSERT INTO click_ranges (first_id, last_id, content_id) VALUES (?, ?, ?)",
                (first_id, last_id, content_id),
            )


def record_click(connection: sqlite3.Connection, click: ClickEvent) -> RecordedClick | None:
    """Record one click inside the caller's transaction: the email's ``Click`` result (counted
    once per email in the topic's statistics), the per-email row that tells a unique click, and
    the topic's per-link counters. None, and nothing written, when the email or the link is
    unknown."""
    row = None
    if click.message_id:
        row = connection.execute(
            "SELECT id, topic_id, content_id, sent_at FROM requests WHERE message_id = ? LIMIT 1",
            (click.message_id,),
        ).fetchone()
    if row is None and click.request_id is not None:
        row = connection.execute(
            "SELECT id, topic_id, content_id, sent_at FROM requests WHERE id = ?",
            (click.request_id,),
        ).fetchone()
    if row is None:
        return None
    request_id, topic_id, content_id, sent_at = row
    url = click.url
    if url is None and click.position is not None:
        found = connection.execute(
            "SELECT url FROM links WHERE content_id = ? AND position = ?",
            (content_id, click.position),
        ).fetchone()
        url = None if found is None else str(found[0])
    if url is None:
        return None
    at = click.occurred_at_ms
    delay = None if sent_at is None else max(0, at - int(sent_at))
    agent = click.user_agent[:MAX_USER_AGENT] if click.user_agent else None
    count = connection.execute(
        "INSERT INTO email_link_clicks (request_id, url, count, first_at, last_at, user_agent,"
        " delay_ms) VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (request_id, url) DO UPDATE"
        " SET count = count + 1, last_at = MAX(last_at, excluded.last_at) RETURNING count",
        (request_id, url, at, at, agent, delay),
    ).fetchone()[0]
    unique = count == 1
    connection.execute(
        "INSERT INTO link_clicks (topic_id, url, unique_clicks, total_clicks) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (topic_id, url) DO UPDATE SET unique_clicks = unique_clicks +"
        " excluded.unique_clicks, total_clicks = total_clicks + 1",
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
        request_id=request_id, topic_id=topic_id, url=url, unique=unique, delay_ms=delay
    )


def topic_links(connection: sqlite3.Connection, topic_id: str) -> list[LinkStats]:
    """The topic's links with their clicks, most clicked first."""
    return [
        LinkStats(url=url, unique_clicks=unique, total_clicks=total)
        for url, unique, total in connection.execute(
            "SELECT url, unique_clicks, total_clicks FROM link_clicks WHERE topic_id = ?"
            " ORDER BY total_clicks DESC, unique_clicks DESC, url",
            (topic_id,),
        )
    ]


def topic_total_clicks(connection: sqlite3.Connection, topic_id: str) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(total_clicks), 0) FROM link_clicks WHERE topic_id = ?", (topic_id,)
    ).fetchone()
    return int(row[0])
