"""Retention on both engines: what pruning deletes, what it must leave exactly as it was, the
storage figures; and on SQLite alone, incremental vacuum, the migration of older files and the
backup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from sesender.models import (
    ClickEvent,
    FeedbackItem,
    NewMessage,
    ResultEvent,
    Sent,
    Submission,
    Suppression,
)
from sesender.pipeline.housekeeper import Housekeeper
from sesender.store.schema import LATEST_VERSION, MIGRATIONS
from sesender.store.sqlite import SqliteStore, migrate, open_sqlite_store
from sesender.store.sqlite_backup import BackupError, backup_database, expected_tables
from tests.unit.store.engines import AnyStore, OpenStore, rows

NOW = 1_700_000_000_000
HOUR = 3_600_000


async def send_topic(
    store: AnyStore, topic: str, count: int, *, at: int, body: str = "<p>hi</p>"
) -> list[int]:
    """Submit ``count`` emails at ``at`` and record them all Sent at ``at`` (with an open each)."""
    emails = tuple(f"{topic}{i}@example.com" for i in range(count))
    await store.submit(
        Submission(
            messages=(NewMessage(topic_id=topic, subject="S", body=body, emails=emails),),
            due_at_ms=at,
            created_at_ms=at,
        )
    )
    claimed = (await store.claim_due(now_ms=at, limit=count)).emails
    ids = [email.request_id for email in claimed]
    await store.record_outcomes(
        [Sent(request_id=i, message_id=f"m{i}", attempts=1, sent_at_ms=at) for i in ids], now_ms=at
    )
    await store.record_feedback(
        [FeedbackItem(events=tuple(ResultEvent("Open", at, request_id=i) for i in ids))], now_ms=at
    )
    return ids


async def snapshot(store: AnyStore, topics: list[str]) -> dict[str, object]:
    """Everything pruning must leave unchanged."""
    return {
        "stats": [await store.topic_stats(topic) for topic in topics],
        "recent": await store.recent_topics(limit=10),
        "sent_1h": await store.count_sent_since(NOW - HOUR),
        "sent_day": await store.count_sent_since(NOW - 30 * HOUR),
        "minutes": rows(store, "SELECT minute, count FROM sent_minutes ORDER BY minute"),
        "suppressions": await store.list_suppressions(email_contains=None, after=None, limit=100),
    }


async def prune(store: AnyStore, *, retention_ms: int, now: int, batch: int = 7) -> Housekeeper:
    keeper = Housekeeper(
        store=store, now_ms=lambda: now, email_retention_ms=retention_ms, batch_size=batch
    )
    await keeper.run_once()
    return keeper


async def test_pruning_deletes_old_final_emails_and_keeps_every_statistic(
    store: AnyStore,
) -> None:
    old = await send_topic(store, "old", 40, at=NOW - 20 * HOUR, body="<p>old</p>" * 200)
    recent = await send_topic(store, "new", 5, at=NOW - HOUR)
    # An old email still waiting (scheduled, not final) and an old suppression.
    await store.submit(
        Submission(
            messages=(NewMessage("old", "S", "<p>later</p>", ("wait@example.com",)),),
            due_at_ms=NOW + 10 * HOUR,
            created_at_ms=NOW - 20 * HOUR,
        )
    )
    await store.put_suppression(
        Suppression(reason="manual", source="api", email="gone@example.com"), now_ms=NOW - 20 * HOUR
    )
    before = await snapshot(store, ["old", "new"])
    keeper = await prune(store, retention_ms=10 * HOUR, now=NOW)
    assert keeper.last_report.emails == 40
    assert keeper.last_report.results == 40
    assert keeper.last_report.batches > 40 // 7  # small transactions
    assert await snapshot(store, ["old", "new"]) == before
    for request_id in old:
        assert await store.request_detail(request_id) is None
        assert await store.was_pruned(request_id)
    for request_id in recent:
        assert await store.request_detail(request_id) is not None
        assert not await store.was_pruned(request_id)
    assert not await store.was_pruned(10_000)  # never issued: 404, not 410
    assert rows(store, "SELECT status FROM requests WHERE email = 'wait@example.com'") == [(0,)]
    # The old content went with its last email; the recent and the waiting ones stay.
    assert rows(store, "SELECT COUNT(*) FROM contents") == [(2,)]
    assert rows(store, "SELECT COUNT(*) FROM results WHERE request_id <= ?", old[-1]) == [(0,)]
    # One range for the run, however many batches.
    assert rows(store, "SELECT first_id, last_id FROM pruned_requests") == [(old[0], old[-1])]
    stats = await store.storage_stats()
    assert stats.emails_pruned == 40
    assert stats.last_prune_at_ms == NOW
    assert stats.rows["requests"] == rows(store, "SELECT COUNT(*) FROM requests")[0][0] == 6
    assert stats.rows["results"] == rows(store, "SELECT COUNT(*) FROM results")[0][0] == 5
    assert stats.rows["suppressions"] == 1
    # A second run finds nothing more and leaves everything as it is.
    again = await prune(store, retention_ms=10 * HOUR, now=NOW)
    assert again.last_report.emails == 0
    assert await snapshot(store, ["old", "new"]) == before


async def test_the_newest_email_is_never_pruned_so_its_id_is_never_reused(
    store: AnyStore,
) -> None:
    ids = await send_topic(store, "t", 3, at=NOW - 20 * HOUR)
    await prune(store, retention_ms=HOUR, now=NOW)
    assert [await store.request_detail(i) is not None for i in ids] == [False, False, True]
    receipt = await store.submit(
        Submission((NewMessage("t", "S", "b", ("x@example.com",)),), NOW, NOW)
    )
    assert receipt.first_request_id == ids[-1] + 1


async def test_retention_zero_keeps_everything(store: AnyStore) -> None:
    ids = await send_topic(store, "t", 5, at=NOW - 1000 * HOUR)
    await prune(store, retention_ms=0, now=NOW)
    assert all([await store.request_detail(i) is not None for i in ids])
    assert (await store.storage_stats()).last_prune_at_ms is None


async def test_a_content_shared_with_a_kept_email_stays(store: AnyStore) -> None:
    await send_topic(store, "a", 4, at=NOW - 20 * HOUR)
    kept = await send_topic(store, "b", 4, at=NOW)  # the same body, so the same content
    assert rows(store, "SELECT COUNT(*), SUM(refs) FROM contents") == [(1, 8)]
    await prune(store, retention_ms=HOUR, now=NOW)
    assert rows(store, "SELECT COUNT(*), SUM(refs) FROM contents") == [(1, 4)]
    assert (await store.request_detail(kept[0])) is not None


async def test_pruning_frees_pages_and_the_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    async with open_sqlite_store(path) as store:
        for n in range(20):
            await send_topic(store, f"t{n}", 50, at=NOW - 20 * HOUR, body=f"<p>{n}</p>" * 2000)
        await send_topic(store, "last", 1, at=NOW)
        full = (await store.storage_stats()).database_bytes
        keeper = await prune(store, retention_ms=HOUR, now=NOW, batch=200)
        assert keeper.last_report.pages_freed > 0
        stats = await store.storage_stats()
        assert stats.free_bytes == 0
        assert stats.database_bytes < full / 3
    assert path.stat().st_size < full / 3  # checkpointed at close: the file itself shrank


def test_the_retention_migration_counts_the_uses_of_existing_contents(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    connection = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:6], start=1):
        connection.executescript(f"BEGIN;{script}PRAGMA user_version = {version};COMMIT;")
    connection.execute(
        "INSERT INTO contents (id, digest, subject, body, created_at) VALUES"
        " (1, x'01', 's', 'b', 0), (2, x'02', 's', 'b', 0)"
    )
    connection.executemany(
        "INSERT INTO requests (topic_id, content_id, email, due_at, created_at, updated_at)"
        " VALUES ('t', ?, 'a@example.com', 0, 0, 0)",
        [(1,), (1,), (1,), (2,)],
    )
    assert connection.execute("PRAGMA auto_vacuum").fetchone() == (0,)  # an older database
    connection.close()
    assert migrate(path) == list(range(7, LATEST_VERSION + 1))
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT id, refs FROM contents ORDER BY id").fetchall() == [
        (1, 3),
        (2, 1),
    ]
    # The start-up step switched it to incremental auto-vacuum (one VACUUM).
    assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    connection.close()


def test_the_migration_that_keeps_links_keeps_those_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "v11.db"
    connection = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:11], start=1):
        connection.executescript(f"BEGIN;{script}PRAGMA user_version = {version};COMMIT;")
    connection.execute(
        "INSERT INTO contents (id, digest, subject, body, created_at)"
        " VALUES (1, x'01', 's', 'b', 0)"
    )
    connection.executemany(
        "INSERT INTO links (content_id, position, url) VALUES (1, ?, ?)",
        [(0, "https://a.example/"), (1, "https://b.example/")],
    )
    connection.close()
    assert 12 in migrate(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("DELETE FROM contents")  # no longer referenced by its links
    connection.commit()
    assert connection.execute("SELECT * FROM links ORDER BY position").fetchall() == [
        (1, 0, "https://a.example/"),
        (1, 1, "https://b.example/"),
    ]
    assert connection.execute("SELECT COUNT(*) FROM click_ranges").fetchone() == (0,)
    connection.close()


async def test_a_backup_is_consistent_verified_and_recorded(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    ids = await send_topic(store, "t", 30, at=NOW)
    target = tmp_path / "backup.db"
    report = backup_database(store.path, target, busy_timeout=5, now_ms=NOW + 1)
    assert report.emails == 30
    assert report.max_request_id == ids[-1]
    assert report.size_bytes == target.stat().st_size > 0
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
    assert copy.execute("PRAGMA user_version").fetchone() == (LATEST_VERSION,)
    names = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert expected_tables() <= names
    assert "requests" in expected_tables()
    copy.close()
    assert not list(await trio.Path(tmp_path).glob(".*partial"))
    assert (await store.storage_stats()).last_backup_at_ms == NOW + 1
    with pytest.raises(BackupError, match="exists"):
        backup_database(store.path, target, busy_timeout=5, now_ms=NOW)
    with pytest.raises(BackupError, match="does not exist"):
        backup_database(tmp_path / "nope.db", tmp_path / "b2.db", busy_timeout=5, now_ms=NOW)


async def test_an_email_that_changed_after_the_scan_is_not_deleted(store: AnyStore) -> None:
    """The walk runs on a reader; the delete checks the conditions again in its transaction."""
    ids = await send_topic(store, "t", 4, at=NOW - 20 * HOUR)
    scan = await store.find_prunable(before_ms=NOW - HOUR, after_id=0, scan_limit=100)
    assert scan.candidates == tuple(ids[:-1])  # not the newest
    assert scan.done
    rows(store, "UPDATE requests SET updated_at = ? WHERE id = ?", NOW, ids[0])
    batch = await store.delete_emails(
        request_ids=scan.candidates, before_ms=NOW - HOUR, range_first_id=None, now_ms=NOW
    )
    assert batch.emails == 2
    assert await store.request_detail(ids[0]) is not None
    assert [await store.was_pruned(i) for i in ids[1:-1]] == [True, True]


async def test_the_walk_stops_at_the_first_email_created_after_the_cutoff(
    store: AnyStore,
) -> None:
    await send_topic(store, "old", 10, at=NOW - 20 * HOUR)
    await send_topic(store, "new", 10, at=NOW)
    scan = await store.find_prunable(before_ms=NOW - HOUR, after_id=0, scan_limit=15)
    assert scan.done  # the 15th email is a new one: nothing after it can be old
    assert len(scan.candidates) == 10
    first = await store.find_prunable(before_ms=NOW - HOUR, after_id=0, scan_limit=4)
    assert (first.candidates, first.next_after_id, first.done) == ((1, 2, 3, 4), 4, False)


# --- click links of pruned emails ----------------------------------------------------------------

LINKS_A = ("https://a.example/?x=1&y=2#f", "https://a.example/2")
LINKS_B = ("https://b.example/", "https://b.example/2", "https://b.example/3")


async def send_tracked(
    store: AnyStore, topic: str, count: int, *, at: int, links: tuple[str, ...]
) -> list[int]:
    """Like :func:`send_topic`, with click tracking and a body of its own links."""
    body = "".join(f'<a href="{url}">{n}</a>' for n, url in enumerate(links))
    emails = tuple(f"{topic}{i}@example.com" for i in range(count))
    message = NewMessage(
        topic_id=topic, subject="S", body=body, emails=emails, track_clicks=True, links=links
    )
    await store.submit(Submission(messages=(message,), due_at_ms=at, created_at_ms=at))
    ids = sorted(
        email.request_id for email in (await store.claim_due(now_ms=at, limit=count)).emails
    )
    await store.record_outcomes(
        [Sent(request_id=i, message_id=f"m{i}", attempts=1, sent_at_ms=at) for i in ids], now_ms=at
    )
    return ids


async def test_a_pruned_emails_click_links_still_redirect_and_record_nothing(
    open_store: OpenStore,
) -> None:
    async with open_store() as store:
        tracked = await send_tracked(store, "clicks", 20, at=NOW - 20 * HOUR, links=LINKS_A)
        untracked = await send_topic(store, "plain", 3, at=NOW - 20 * HOUR)
        await send_topic(store, "new", 1, at=NOW)
        await store.record_click(
            ClickEvent(NOW - 19 * HOUR, request_id=tracked[3], position=1), now_ms=NOW
        )
        links_before = await store.topic_links("clicks")
        stats_before = await store.topic_stats("clicks")
        await prune(store, retention_ms=HOUR, now=NOW)  # batches of 7: three deletes
        assert rows(store, "SELECT COUNT(*) FROM requests WHERE topic_id <> 'new'") == [(0,)]
        assert rows(store, "SELECT COUNT(*) FROM contents WHERE body LIKE ?", "%a.example%") == [
            (0,)
        ]
        # The twenty emails, pruned batch after batch, are one range.
        assert rows(store, "SELECT first_id, last_id FROM click_ranges") == [
            (tracked[0], tracked[-1])
        ]
        assert await store.click_target(tracked[5], 0) == LINKS_A[0]  # from memory
    async with open_store() as fresh:  # nothing in memory: from the database
        for request_id in (tracked[0], tracked[5], tracked[-1]):
            assert await fresh.click_target(request_id, 0) == LINKS_A[0]
            assert await fresh.click_target(request_id, 1) == LINKS_A[1]
            assert await fresh.click_target(request_id, 2) is None
        assert await fresh.click_target(untracked[0], 0) is None
        assert await fresh.click_target(tracked[-1] + 10_000, 0) is None
        recorded = await fresh.record_click(
            ClickEvent(NOW, request_id=tracked[5], position=1), now_ms=NOW
        )
        assert recorded is None
        assert await fresh.topic_links("clicks") == links_before
        assert await fresh.topic_stats("clicks") == stats_before


async def test_a_content_id_is_never_given_twice_so_kept_links_meet_no_new_content(
    open_store: OpenStore,
) -> None:
    async with open_store() as store:
        a = await send_tracked(store, "a", 2, at=NOW - 20 * HOUR, links=LINKS_A)
        b = await send_tracked(store, "b", 2, at=NOW - 20 * HOUR, links=LINKS_B)
        # The newest email shares A's content: B's content is the newest content, unused once
        # its emails are pruned.
        await send_tracked(store, "keep", 1, at=NOW, links=LINKS_A)
        await prune(store, retention_ms=HOUR, now=NOW)
        assert rows(store, "SELECT COUNT(*) FROM requests") == [(1,)]
        c = await send_tracked(store, "c", 2, at=NOW - 10 * HOUR, links=("https://c.example/",))
        await send_tracked(store, "keep", 1, at=NOW, links=LINKS_A)
        await prune(store, retention_ms=HOUR, now=NOW)
        # B's content is gone now that a newer content exists (C's, spared in its turn).
        assert rows(store, "SELECT COUNT(*) FROM contents WHERE body LIKE ?", "%b.example%") == [
            (0,)
        ]
    async with open_store() as fresh:
        assert await fresh.click_target(a[0], 1) == LINKS_A[1]
        assert await fresh.click_target(b[1], 2) == LINKS_B[2]
        assert await fresh.click_target(c[0], 0) == "https://c.example/"
        assert await fresh.click_target(c[0], 1) is None
        d = await send_tracked(fresh, "d", 1, at=NOW, links=("https://d.example/",))
        assert await fresh.click_target(d[0], 0) == "https://d.example/"
    async with open_store() as again:
        assert await again.click_target(d[0], 0) == "https://d.example/"
        assert await again.click_target(b[0], 0) == LINKS_B[0]
