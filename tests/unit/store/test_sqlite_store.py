from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.errors import StoreError, StoreUnavailable
from sesender.models import (
    ClaimedEmail,
    Deferred,
    Failed,
    FailureKind,
    NewIdempotencyKey,
    NewMessage,
    Outcome,
    Retry,
    Sent,
    Status,
    Stopped,
    Submission,
)
from sesender.store import pg_queries, sqlite_queries
from sesender.store.postgres import open_postgres_store
from sesender.store.schema import LATEST_VERSION
from sesender.store.sqlite import SqliteStore, migrate, open_sqlite_store
from tests import postgres_support
from tests.unit.store.engines import ENGINES, AnyStore, Db, OpenStore, rows

NOW = 1_700_000_000_000


def submission(*messages: NewMessage, due: int = NOW, now: int = NOW) -> Submission:
    return Submission(messages=messages, due_at_ms=due, created_at_ms=now)


def message(topic: str, count: int, *, body: str = "<p>hi</p>", start: int = 0) -> NewMessage:
    return NewMessage(
        topic_id=topic,
        subject="Subject",
        body=body,
        emails=tuple(f"user{i}@example.com" for i in range(start, start + count)),
    )


async def test_a_submission_of_10000_is_stored_with_one_content(store: AnyStore) -> None:
    receipt = await store.submit(submission(message("t", 10_000)))
    assert receipt.stored == 10_000
    assert receipt.first_request_id == 1
    assert rows(store, "SELECT COUNT(*) FROM requests") == [(10_000,)]
    assert rows(store, "SELECT COUNT(*) FROM contents") == [(1,)]
    # The same content again is not stored again.
    await store.submit(submission(message("u", 3)))
    assert rows(store, "SELECT COUNT(*) FROM contents") == [(1,)]
    stats = await store.topic_stats("t")
    assert stats.request_counts == {"Created": 10_000}
    assert stats.result_counts == {}


async def test_a_failing_submission_stores_nothing(store: AnyStore, db: Db) -> None:
    """The second message of the submission fails (a trigger refuses one address): the first
    message's rows, already inserted in the same transaction, are rolled back too."""
    db.refuse("requests", "INSERT", "NEW.email = 'poison@example.com'")
    bad = NewMessage(
        topic_id="t", subject="s", body="b", emails=("a@example.com", "poison@example.com")
    )
    with pytest.raises(StoreError, match="poison"):
        await store.submit(submission(message("t", 5), bad))
    assert rows(store, "SELECT COUNT(*) FROM requests") == [(0,)]
    assert await store.topic_stats("t") == await store.topic_stats("nothing")


async def test_claim_takes_due_emails_oldest_first_in_bounded_batches(store: AnyStore) -> None:
    await store.submit(submission(message("later", 2), due=NOW + 60_000))
    await store.submit(submission(message("now", 5, body="other"), due=NOW - 10))
    first = await store.claim_due(now_ms=NOW, limit=3)
    assert [e.request_id for e in first.emails] == [3, 4, 5]
    assert all(e.content.body == "other" and e.topic_id == "now" for e in first.emails)
    second = await store.claim_due(now_ms=NOW, limit=10)
    assert [e.request_id for e in second.emails] == [6, 7]
    assert (await store.claim_due(now_ms=NOW, limit=10)).emails == ()
    assert await store.next_due_at() == NOW + 60_000
    later = await store.claim_due(now_ms=NOW + 60_000, limit=10)
    assert [e.request_id for e in later.emails] == [1, 2]
    assert await store.next_due_at() is None
    assert (await store.topic_stats("now")).request_counts == {"Processed": 5}


async def test_claim_ends_suppressed_addresses(store: AnyStore) -> None:
    await store.submit(submission(message("t", 3)))
    rows(store, "INSERT INTO suppressions VALUES ('user1@example.com', 'bounce', 'test', NULL, 0)")
    batch = await store.claim_due(now_ms=NOW, limit=10)
    assert [e.email for e in batch.emails] == ["user0@example.com", "user2@example.com"]
    assert batch.suppressed == 1
    assert (await store.topic_stats("t")).request_counts == {"Processed": 2, "Suppressed": 1}


async def test_outcomes_are_applied_and_counted(store: AnyStore) -> None:
    await store.submit(submission(message("t", 5)))
    batch = await store.claim_due(now_ms=NOW, limit=10)
    ids = [e.request_id for e in batch.emails]
    await store.record_outcomes(
        [
            Sent(request_id=ids[0], message_id="m-1", attempts=1, sent_at_ms=NOW + 5),
            Failed(
                request_id=ids[1],
                error="MessageRejected: no",
                kind=FailureKind.PERMANENT,
                attempts=1,
            ),
            Retry(request_id=ids[2], error="throttled", attempts=1, due_at_ms=NOW + 1000),
            Deferred(request_id=ids[3], due_at_ms=NOW),
            Stopped(request_id=ids[4]),
        ],
        now_ms=NOW + 10,
    )
    stats = await store.topic_stats("t")
    assert stats.request_counts == {"Sent": 1, "Failed": 1, "Created": 2, "Stopped": 1}
    sent = await store.request_detail(ids[0])
    assert sent is not None
    assert (sent.status, sent.message_id, sent.attempts, sent.sent_at_ms) == (
        Status.SENT,
        "m-1",
        1,
        NOW + 5,
    )
    failed = await store.request_detail(ids[1])
    assert failed is not None
    assert (failed.status, failed.error, failed.failure_kind) == (
        Status.FAILED,
        "MessageRejected: no",
        FailureKind.PERMANENT,
    )
    retry = await store.request_detail(ids[2])
    assert retry is not None
    assert (retry.status, retry.attempts, retry.due_at_ms) == (Status.CREATED, 1, NOW + 1000)
    assert await store.next_due_at() == NOW
    assert await store.count_sent_since(NOW) == 1
    assert await store.queued_count() == 2


async def test_outcomes_never_overwrite_a_final_status(store: AnyStore) -> None:
    await store.submit(submission(message("t", 1)))
    (email,) = (await store.claim_due(now_ms=NOW, limit=1)).emails
    await store.record_outcomes([Stopped(request_id=email.request_id)], now_ms=NOW)
    await store.record_outcomes(
        [Sent(request_id=email.request_id, message_id="late", attempts=1, sent_at_ms=NOW)],
        now_ms=NOW,
    )
    detail = await store.request_detail(email.request_id)
    assert detail is not None
    assert detail.status is Status.STOPPED


async def test_per_row_fallback_when_the_bulk_update_fails(store: AnyStore, db: Db) -> None:
    await store.submit(submission(message("t", 3)))
    ids = [e.request_id for e in (await store.claim_due(now_ms=NOW, limit=3)).emails]
    db.refuse("requests", "UPDATE OF message_id", "NEW.message_id = 'poison'")
    await store.record_outcomes(
        [
            Sent(request_id=ids[0], message_id="ok-0", attempts=1, sent_at_ms=NOW),
            Sent(request_id=ids[1], message_id="poison", attempts=1, sent_at_ms=NOW),
            Sent(request_id=ids[2], message_id="ok-2", attempts=1, sent_at_ms=NOW),
        ],
        now_ms=NOW,
    )
    assert (await store.topic_stats("t")).request_counts == {"Sent": 2, "Processed": 1}


async def test_batches_in_one_call_are_all_written_and_sent_or_failed_again_change_nothing(
    store: AnyStore, db: Db
) -> None:
    # The post-processor's call of several batches; a final outcome written again is ignored.
    await store.submit(submission(message("t", 6)))
    ids = [e.request_id for e in (await store.claim_due(now_ms=NOW, limit=6)).emails]
    db.refuse("requests", "UPDATE OF message_id", "NEW.message_id = 'poison'")
    first = [Sent(request_id=i, message_id=f"m-{i}", attempts=1, sent_at_ms=NOW) for i in ids[:3]]
    second: list[Outcome] = [
        Sent(request_id=ids[3], message_id="ok", attempts=1, sent_at_ms=NOW),
        Sent(request_id=ids[4], message_id="poison", attempts=1, sent_at_ms=NOW),
        Failed(request_id=ids[5], error="no", kind=FailureKind.PERMANENT, attempts=1),
    ]
    for now in (NOW, NOW + 1):
        await store.record_outcome_batches([first, second], now_ms=now)
        stats = await store.topic_stats("t")
        assert stats.request_counts == {"Sent": 4, "Failed": 1, "Processed": 1}
    detail = await store.request_detail(ids[0])
    assert detail is not None
    assert (detail.status, detail.message_id) == (Status.SENT, f"m-{ids[0]}")


async def test_a_refused_later_batch_ends_the_call_with_the_count_of_those_written(
    store: AnyStore, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database refuses the second batch (unavailable): the first stays written and the call
    # says so instead of raising, so the caller writes only the rest again; a refused first
    # batch raises as a single batch would.
    queries = sqlite_queries if engine == "sqlite" else pg_queries
    refusal = sqlite3.OperationalError if engine == "sqlite" else psycopg.OperationalError
    real = queries.record_outcomes
    calls: list[int] = []

    def second_refused(connection: Any, outcomes: Sequence[Outcome], now_ms: int) -> int:
        calls.append(len(outcomes))
        if len(calls) == 2:
            raise refusal("database is unavailable")
        return int(real(connection, outcomes, now_ms))

    monkeypatch.setattr(queries, "record_outcomes", second_refused)
    await store.submit(submission(message("t", 4)))
    ids = [e.request_id for e in (await store.claim_due(now_ms=NOW, limit=4)).emails]
    batches = [
        [Sent(request_id=i, message_id=f"m-{i}", attempts=1, sent_at_ms=NOW) for i in pair]
        for pair in (ids[:2], ids[2:])
    ]
    assert await store.record_outcome_batches(batches, now_ms=NOW) == 1
    assert (await store.topic_stats("t")).request_counts == {"Sent": 2, "Processed": 2}
    calls[:] = [0]  # the next call's first batch is the one refused
    with pytest.raises(StoreError):
        await store.record_outcome_batches(batches[1:], now_ms=NOW)
    assert await store.record_outcome_batches(batches[1:], now_ms=NOW) == 1
    assert (await store.topic_stats("t")).request_counts == {"Sent": 4}


async def test_recover_requeues_claimed_emails(store: AnyStore) -> None:
    await store.submit(submission(message("t", 4)))
    await store.claim_due(now_ms=NOW, limit=3)
    assert await store.recover_claimed(now_ms=NOW + 1) == 3
    assert (await store.topic_stats("t")).request_counts == {"Created": 4}
    assert await store.recover_claimed(now_ms=NOW + 2) == 0


async def test_stop_topic_spares_kept_ids_later_emails_and_other_topics(store: AnyStore) -> None:
    await store.submit(submission(message("a", 5), message("b", 2, start=100)))
    claimed = await store.claim_due(now_ms=NOW, limit=2)
    up_to = await store.max_request_id()
    await store.submit(submission(message("a", 2, start=50)))  # accepted after the DELETE
    result = await store.stop_topic(
        "a", up_to_id=up_to, keep=[claimed.emails[0].request_id], now_ms=NOW
    )
    assert result.stopped == 4
    assert (await store.topic_stats("a")).request_counts == {
        "Processed": 1,
        "Stopped": 4,
        "Created": 2,
    }
    assert (await store.topic_stats("b")).request_counts == {"Created": 2}


async def test_count_sent_since_is_exact_at_minute_edges(store: AnyStore) -> None:
    minute = 60_000
    base = (NOW // minute) * minute
    times = [base - 1, base, base + 1, base + minute - 1, base + minute, base + 5 * minute + 7]
    await store.submit(submission(message("t", len(times))))
    emails = (await store.claim_due(now_ms=NOW, limit=100)).emails
    await store.record_outcomes(
        [
            Sent(request_id=e.request_id, message_id=f"m{i}", attempts=1, sent_at_ms=t)
            for i, (e, t) in enumerate(zip(emails, times, strict=True))
        ],
        now_ms=NOW,
    )
    for since in [
        base - 2,
        base - 1,
        base,
        base + 1,
        base + 2,
        base + minute,
        base + 6 * minute,
        base + minute - 1,
        base + 5 * minute + 7,
        base + 5 * minute + 8,
    ]:
        expected = sum(1 for t in times if t >= since)
        assert await store.count_sent_since(since) == expected, since


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.integers(1, 20),
            st.sampled_from(["sent", "failed", "retry", "stop", "none"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_counters_always_equal_a_recount(
    tmp_path_factory: pytest.TempPathFactory,
    engine: str,
    request: pytest.FixtureRequest,
    plan: list[tuple[str, int, str]],
) -> None:
    """Whatever happens, the trigger-kept counters equal a GROUP BY over the requests."""
    import trio

    def opener() -> AbstractAsyncContextManager[AnyStore]:
        if engine == "sqlite":
            return open_sqlite_store(tmp_path_factory.mktemp("counters") / "db.sqlite")
        url = request.getfixturevalue("pg_url")
        postgres_support.reset(url)
        return open_postgres_store(url, pool_size=2)

    async def scenario() -> None:
        async with opener() as store:
            for topic, count, action in plan:
                await store.submit(submission(message(topic, count)))
                emails = (await store.claim_due(now_ms=NOW, limit=count)).emails
                if action == "stop":
                    await store.stop_topic(
                        topic, up_to_id=await store.max_request_id(), keep=[], now_ms=NOW
                    )
                    continue
                outcomes: dict[str, Callable[[ClaimedEmail], Outcome]] = {
                    "sent": lambda e: Sent(e.request_id, f"m{e.request_id}", 1, NOW),
                    "failed": lambda e: Failed(e.request_id, "x", FailureKind.PERMANENT, 1),
                    "retry": lambda e: Retry(e.request_id, "x", 1, NOW),
                }
                if action in outcomes:
                    await store.record_outcomes([outcomes[action](e) for e in emails], now_ms=NOW)
            for topic in "abc":
                recount = {
                    Status(cast(int, status)).label: n
                    for status, n in rows(
                        store,
                        "SELECT status, COUNT(*) FROM requests WHERE topic_id = ? GROUP BY status",
                        topic,
                    )
                }
                assert (await store.topic_stats(topic)).request_counts == recount

    trio.run(scenario)


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    assert migrate(path) == list(range(1, LATEST_VERSION + 1))
    assert migrate(path) == []
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    connection.close()


async def test_pragmas_on_store_connections(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    connection = store._writer  # the one writer connection
    assert connection is not None
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert connection.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    assert connection.execute("PRAGMA cache_size").fetchone() == (-65536,)
    assert connection.execute("PRAGMA mmap_size").fetchone() == (268435456,)


async def test_a_database_refusing_writes_is_unavailable_not_a_crash(
    sqlite_store: SqliteStore,
) -> None:
    """Root ignores file permissions, so make the writer connection itself read-only."""
    store = sqlite_store
    assert store._writer is not None
    store._writer.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable, match="readonly"):
        await store.submit(submission(message("t", 1)))
    store._writer.execute("PRAGMA query_only = OFF")
    assert (await store.submit(submission(message("t", 1)))).stored == 1


async def test_refused_writes_are_one_episode_until_a_change_commits(
    sqlite_store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``write_status`` is what ``/ready`` and the metrics show: reads keep working while the
    database refuses writes, so only the writes can tell."""
    store = sqlite_store
    assert store._writer is not None
    assert store.write_status().failing is False
    await store.submit(submission(message("t", 2)))
    store._writer.execute("PRAGMA query_only = ON")
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await store.submit(submission(message("t", 1)))
    await store.ping()  # reads still work
    status = store.write_status()
    assert status.failing is True
    assert status.failing_since_ms is not None
    assert "readonly" in status.last_error
    assert (status.failures_total, status.episodes_total) == (3, 1)
    store._writer.execute("PRAGMA query_only = OFF")
    # A write that changes nothing (no email due) touches no page: it proves nothing.
    assert (await store.claim_due(now_ms=NOW - 1, limit=10)).emails == ()
    assert store.write_status().failing is True
    assert len((await store.claim_due(now_ms=NOW, limit=10)).emails) == 2
    assert store.write_status().failing is False
    assert store.write_status().failing_since_ms is None
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events.count("store_unavailable") == 1  # once per episode, not per refused write
    assert events.count("store_recovered") == 1
    levels = {getattr(r, "event", None): r.levelname for r in caplog.records}
    assert levels["store_unavailable"] == "ERROR"


async def test_prune_forgets_only_old_dedup_records(store: AnyStore) -> None:
    from sesender.models import FeedbackItem

    await store.record_feedback([FeedbackItem(source_id="old")], now_ms=NOW - 10_000)
    await store.record_feedback([FeedbackItem(source_id="new")], now_ms=NOW)
    await store.submit(
        submission(message("t", 1)),
        idempotency=NewIdempotencyKey("k-old", b"d", NOW - 10_000, lambda first_id: "{}"),
    )
    assert await store.prune(before_ms=NOW - 5_000) == (1, 1)
    assert rows(store, "SELECT message_id FROM sns_messages") == [("new",)]
    assert await store.find_idempotency("k-old", since_ms=0) is None


async def test_a_retried_email_of_a_cancelled_topic_stays_stopped_after_reopening(
    open_store: OpenStore,
) -> None:
    async with open_store() as store:
        await store.submit(submission(message("t", 1)))
        (email,) = (await store.claim_due(now_ms=NOW, limit=1)).emails
        up_to = await store.max_request_id()
        await store.stop_topic("t", up_to_id=up_to, keep=[email.request_id], now_ms=NOW)
        await store.record_outcomes(
            [Retry(request_id=email.request_id, error="throttled", attempts=1, due_at_ms=NOW)],
            now_ms=NOW,
        )
    async with open_store() as reopened:
        assert (await reopened.claim_due(now_ms=NOW + 60_000, limit=10)).emails == ()
        detail = await reopened.request_detail(email.request_id)
        assert detail is not None
        assert detail.status is Status.STOPPED


async def test_a_cancellation_stops_deferred_recovered_and_requeued_emails(
    store: AnyStore,
) -> None:
    """Every way back into the queue ends an email of a cancelled topic Stopped; emails of the
    topic accepted after the cancel, and other topics, are untouched; counters stay exact."""
    await store.submit(submission(message("t", 4), message("other", 1, start=10)))
    claimed = [e.request_id for e in (await store.claim_due(now_ms=NOW, limit=5)).emails]
    assert claimed == [1, 2, 3, 4, 5]
    await store.record_outcomes(
        [Failed(request_id=1, error="gave up", kind=FailureKind.EXHAUSTED, attempts=5)],
        now_ms=NOW,
    )
    up_to = await store.max_request_id()
    # 2, 3 and 4 are with the provider: kept; so is the other topic's email.
    result = await store.stop_topic("t", up_to_id=up_to, keep=[2, 3, 4], now_ms=NOW)
    assert result.stopped == 0
    await store.submit(submission(message("t", 1, start=20)))  # id 6, after the cancel
    await store.record_outcomes(
        [
            Deferred(request_id=2, due_at_ms=NOW),
            Deferred(request_id=5, due_at_ms=NOW),
        ],
        now_ms=NOW,
    )
    assert await store.recover_claimed(now_ms=NOW) == 2  # 3 and 4, left claimed: stopped
    assert await store.retry_failed("t", now_ms=NOW) == 1  # 1 back to Created ...
    batch = await store.claim_due(now_ms=NOW + 1, limit=10)
    assert [e.request_id for e in batch.emails] == [5, 6]
    assert batch.stopped == 1  # ... and ended Stopped by the claim
    assert (await store.topic_stats("t")).request_counts == {"Stopped": 4, "Processed": 1}
    recount = rows(
        store, "SELECT status, COUNT(*) FROM requests WHERE topic_id = 't' GROUP BY status"
    )
    assert set(recount) == {(Status.STOPPED, 4), (Status.PROCESSED, 1)}


async def test_cancellations_keep_the_highest_request_id(store: AnyStore) -> None:
    await store.stop_topic("t", up_to_id=10, keep=[], now_ms=NOW)
    await store.stop_topic("t", up_to_id=4, keep=[], now_ms=NOW)
    await store.stop_topic("u", up_to_id=2, keep=[], now_ms=NOW)
    assert await store.cancellations() == {"t": 10, "u": 2}


async def test_an_idempotent_response_is_built_in_the_transaction_and_saved_as_given(
    store: AnyStore,
) -> None:
    """The store calls the caller's ``response_for`` with the first request id its transaction
    assigned, and saves and returns the string untouched; a replay calls nothing."""
    calls: list[int | None] = []

    def response_for(first_request_id: int | None) -> str:
        calls.append(first_request_id)
        return f"first={first_request_id}"

    await store.submit(submission(message("x", 2)))  # ids 1 and 2
    key = NewIdempotencyKey("k", b"digest", NOW, response_for)
    receipt = await store.submit(submission(message("t", 3)), idempotency=key)
    assert calls == [3]
    assert (receipt.stored, receipt.first_request_id, receipt.response) == (3, 3, "first=3")
    record = await store.find_idempotency("k", since_ms=NOW)
    assert record is not None
    assert (record.response, record.body_digest) == ("first=3", b"digest")

    again = await store.submit(submission(message("t", 3)), idempotency=key)
    assert again.replayed == record
    assert again.stored == 0
    assert calls == [3]

    empty = await store.submit(
        submission(NewMessage("t", "s", "b", ())),
        idempotency=NewIdempotencyKey("nothing", b"d", NOW, response_for),
    )
    assert (empty.stored, empty.response) == (0, "first=None")


async def test_a_batch_of_sent_outcomes_keeps_every_counter_exact(store: AnyStore) -> None:
    # A batch's Sent outcomes are one statement; the triggers must still count each row, and a
    # row that is no longer Processed (here: stopped by a cancellation) must stay as it is.
    await store.submit(submission(message("t", 120)))
    batch = await store.claim_due(now_ms=NOW, limit=200)
    ids = [e.request_id for e in batch.emails]
    await store.record_outcomes([Stopped(request_id=ids[0])], now_ms=NOW)
    await store.record_outcomes(
        [
            Sent(request_id=i, message_id=f"m-{i}", attempts=2, sent_at_ms=NOW + 60_000 * (i % 2))
            for i in ids
        ],
        now_ms=NOW + 10,
    )
    assert (await store.topic_stats("t")).request_counts == {"Sent": 119, "Stopped": 1}
    assert rows(
        store, "SELECT status, count FROM topic_counts WHERE count > 0 ORDER BY status"
    ) == [
        (Status.SENT.value, 119),
        (Status.STOPPED.value, 1),
    ]
    assert rows(store, "SELECT SUM(count) FROM sent_minutes") == [(119,)]
    assert rows(store, "SELECT COUNT(*) FROM sent_minutes") == [(2,)]
    assert await store.count_sent_since(NOW) == 119
    last = await store.request_detail(ids[-1])
    assert last is not None
    assert (last.status, last.message_id, last.attempts, last.sent_at_ms, last.error) == (
        Status.SENT,
        f"m-{ids[-1]}",
        2,
        NOW + 60_000 * (ids[-1] % 2),
        None,
    )
    stopped = await store.request_detail(ids[0])
    assert stopped is not None
    assert (stopped.status, stopped.message_id) == (Status.STOPPED, None)


async def test_an_email_named_twice_in_one_batch_gets_its_first_outcome(
    store: AnyStore,
) -> None:
    await store.submit(submission(message("t", 2)))
    batch = await store.claim_due(now_ms=NOW, limit=10)
    first, second = (e.request_id for e in batch.emails)
    await store.record_outcomes(
        [
            Sent(request_id=first, message_id="m-1", attempts=1, sent_at_ms=NOW),
            Sent(request_id=second, message_id="m-2", attempts=1, sent_at_ms=NOW),
            Sent(request_id=first, message_id="m-again", attempts=2, sent_at_ms=NOW + 1),
        ],
        now_ms=NOW,
    )
    detail = await store.request_detail(first)
    assert detail is not None
    assert (detail.message_id, detail.attempts) == ("m-1", 1)
    assert (await store.topic_stats("t")).request_counts == {"Sent": 2}
    assert rows(store, "SELECT SUM(count) FROM sent_minutes") == [(2,)]
