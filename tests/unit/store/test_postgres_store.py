"""What only the PostgreSQL store has: several instances on one database.

Concurrent claims never hand one email to two instances; a silent instance's claims go back to
the queue, a live one's do not; the shared token bucket never grants more than its rate and
burst; migrations run once when instances start together; a lost connection is "unavailable"
once, then the pool reconnects; notifications reach a listener.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import trio

from sesender.errors import StoreUnavailable
from sesender.models import NewMessage, Status, Submission
from sesender.store import pg_queries
from sesender.store.pg_notify import NotificationListener
from sesender.store.pg_schema import HOUSEKEEPING_LOCK, LATEST_VERSION
from sesender.store.postgres import PostgresStore, migrate, open_postgres_store
from tests import postgres_support
from tests.unit.store.engines import Db, rows

NOW = 1_700_000_000_000


def submission(topic: str, count: int, *, start: int = 0) -> Submission:
    message = NewMessage(
        topic_id=topic,
        subject="s",
        body="b",
        emails=tuple(f"u{i}@example.com" for i in range(start, start + count)),
    )
    return Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW)


@pytest.fixture
def pg(pg_url: str) -> Db:
    postgres_support.reset(pg_url)
    return Db("postgres", pg_url)


async def test_concurrent_claims_never_share_an_email(pg: Db) -> None:
    async with (
        open_postgres_store(pg.target, instance_id="a", pool_size=3) as a,
        open_postgres_store(pg.target, instance_id="b", pool_size=3) as b,
    ):
        await a.submit(submission("t", 3000))
        claimed: dict[str, list[int]] = {"a": [], "b": []}

        async def drain(store: PostgresStore) -> None:
            while True:
                batch = await store.claim_due(now_ms=NOW, limit=100)
                if not batch.emails:
                    return
                claimed[store.instance_id] += [e.request_id for e in batch.emails]

        async with trio.open_nursery() as nursery:
            for store in (a, a, b, b):
                nursery.start_soon(drain, store)
    every = claimed["a"] + claimed["b"]
    assert len(every) == len(set(every)) == 3000
    assert claimed["a"]  # both worked
    assert claimed["b"]
    assert rows(a, "SELECT claimed_by, COUNT(*) FROM requests GROUP BY 1 ORDER BY 1") == [
        ("a", len(claimed["a"])),
        ("b", len(claimed["b"])),
    ]


async def test_a_silent_instances_claims_are_requeued_and_a_live_ones_are_not(pg: Db) -> None:
    async with (
        open_postgres_store(pg.target, instance_id="dead", pool_size=2) as dead,
        open_postgres_store(pg.target, instance_id="live", pool_size=2) as live,
    ):
        assert await dead.heartbeat() is True  # a new row
        assert await live.heartbeat() is True
        assert await live.heartbeat() is False  # refreshed
        await dead.submit(submission("t", 10))
        gone = await dead.claim_due(now_ms=NOW, limit=4)
        kept = await live.claim_due(now_ms=NOW, limit=3)
        assert await live.requeue_dead_claims(lease_ms=60_000, now_ms=NOW) == 0
        # "dead" stops beating: its heartbeat ages past the lease (the database clock decides).
        pg.execute(
            "UPDATE instances SET heartbeat_at = heartbeat_at - 61000 WHERE instance_id = ?", "dead"
        )
        assert await live.requeue_dead_claims(lease_ms=60_000, now_ms=NOW + 5) == 4
        assert await live.instance_ids() == ["live"]
        assert await dead.heartbeat() is True  # it comes back: it can tell it was removed
        statuses = dict(
            rows(
                live,
                "SELECT id, status FROM requests WHERE id = ANY(?)",
                [e.request_id for e in (*gone.emails, *kept.emails)],
            )
        )
        assert {statuses[e.request_id] for e in gone.emails} == {Status.CREATED}
        assert {statuses[e.request_id] for e in kept.emails} == {Status.PROCESSED}
        again = await live.claim_due(now_ms=NOW + 5, limit=10)
        assert {e.request_id for e in gone.emails} <= {e.request_id for e in again.emails}


async def test_an_instance_with_other_rate_settings_is_not_registered_beside_live_ones(
    pg: Db,
) -> None:
    async with (
        open_postgres_store(pg.target, instance_id="a", rate_settings=(100, 10)) as a,
        open_postgres_store(pg.target, instance_id="b", rate_settings=(100, 20)) as b,
        open_postgres_store(pg.target, instance_id="c", rate_settings=(100, 10)) as c,
        open_postgres_store(pg.target, instance_id="old") as old,
    ):
        await old.heartbeat()  # settings unknown (an older version): never compared
        assert await a.register() == []
        assert await b.register() == [pg_queries.InstanceRate("a", 100, 10)]
        assert await c.register() == []
        assert await old.register() == []
        assert await a.instance_ids() == ["a", "c", "old"]  # b wrote nothing
        # Once a and c are past the lease (dead), b's settings are the only ones: it starts.
        pg.execute("UPDATE instances SET heartbeat_at = heartbeat_at - 20000")
        assert await b.register() == []
        assert rows(
            b, "SELECT max_send_per_second, send_burst FROM instances WHERE instance_id = ?", "b"
        ) == [(100, 20)]


async def test_a_cancellation_leaves_another_live_instances_claims_to_it(pg: Db) -> None:
    async with (
        open_postgres_store(pg.target, instance_id="a", pool_size=2) as a,
        open_postgres_store(pg.target, instance_id="b", pool_size=2) as b,
    ):
        await a.heartbeat()
        await b.heartbeat()
        await a.submit(submission("t", 6))
        mine = await a.claim_due(now_ms=NOW, limit=2)
        theirs = await b.claim_due(now_ms=NOW, limit=2)
        result = await a.stop_topic("t", up_to_id=6, keep=[], now_ms=NOW)
        assert result.stopped == 4  # two queued, two of its own
        assert (await a.topic_stats("t")).request_counts == {"Stopped": 4, "Processed": 2}
        # b learns of it (notification or poll) and ends its own as Stopped or Sent.
        assert await b.cancellations() == {"t": 6}
        assert {e.request_id for e in theirs.emails}.isdisjoint({e.request_id for e in mine.emails})


@pytest.mark.parametrize("takers", [1, 4])
def test_the_shared_bucket_grants_no_more_than_rate_and_burst(pg: Db, takers: int) -> None:
    """Threads (instances) take tokens as fast as they can for 0.6 s at R = 200, burst 20: the
    total stays within burst + R x elapsed, and close to it, also when only one of them asks
    (the others idle: no fixed R/N split)."""
    rate, burst = 200.0, 20.0
    granted = [0] * takers
    start = time.monotonic()
    deadline = start + 0.6

    def taker(slot: int) -> None:
        with psycopg.connect(pg.target, autocommit=True) as connection:
            while time.monotonic() < deadline:
                ok, _ = pg_queries.take_tokens(connection, "account", 5, rate, burst)
                if ok:
                    granted[slot] += 5

    threads = [threading.Thread(target=taker, args=(i,)) for i in range(takers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    total = sum(granted)
    assert total <= burst + rate * elapsed + 5
    assert total >= burst + rate * 0.6 * 0.6  # most of the rate was reachable
    assert sum(1 for g in granted if g) >= min(2, takers)  # shared, not one winner


def test_the_shared_bucket_gives_up_to_at_most_and_never_less_than_count(pg: Db) -> None:
    with psycopg.connect(pg.target, autocommit=True) as connection:
        # A bucket of 20 (the burst) at a rate too slow to refill during the test.
        assert pg_queries.take_tokens(connection, "account", 5, 0.001, 20, at_most=12) == (12, 20)
        taken, available = pg_queries.take_tokens(connection, "account", 5, 0.001, 20, at_most=12)
        assert taken == available == pytest.approx(8, abs=0.01)  # all there was
        taken, available = pg_queries.take_tokens(connection, "account", 1, 0.001, 20)
        assert taken == 0  # fewer than count: nothing taken
        assert available < 1


def test_instances_starting_together_migrate_once() -> None:
    with postgres_support.temporary_database("sesender_migrate") as url:
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                results.append(migrate(url))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(results, key=len) == [[], [], list(range(1, LATEST_VERSION + 1))]
        assert migrate(url) == []


async def test_housekeeping_runs_on_one_instance_at_a_time(pg: Db) -> None:
    async with open_postgres_store(pg.target, pool_size=2) as store:
        from sesender.models import FeedbackItem

        await store.record_feedback([FeedbackItem(source_id="old")], now_ms=NOW - 10_000)
        with psycopg.connect(pg.target, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (HOUSEKEEPING_LOCK,))
            assert await store.prune(before_ms=NOW) == (0, 0)  # another instance is at it
            other.execute("SELECT pg_advisory_unlock(%s)", (HOUSEKEEPING_LOCK,))
        assert await store.prune(before_ms=NOW) == (1, 0)


async def test_a_lost_connection_is_unavailable_once_then_the_pool_reconnects(pg: Db) -> None:
    async with open_postgres_store(pg.target, pool_size=2) as store:
        await store.submit(submission("t", 1))
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # The pool's connection is gone: the next call says so (503 on the API), not a crash.
        with pytest.raises(StoreUnavailable):
            await store.queued_count()
        failures = 0
        for _ in range(5):
            try:
                assert await store.queued_count() == 1
                break
            except StoreUnavailable:
                failures += 1
        assert failures < 2


async def test_a_submission_notifies_every_listener(pg: Db) -> None:
    listener = NotificationListener(pg.target)
    try:
        assert await listener.wait(0.01) == []  # connects and listens
        async with open_postgres_store(pg.target, pool_size=2) as store:
            await store.submit(submission("t", 2))
            scheduled = Submission(
                messages=submission("t", 1, start=5).messages,
                due_at_ms=NOW + 60_000,
                created_at_ms=NOW,
            )
            await store.submit(scheduled)  # not due now: no notification
            await store.stop_topic("t", up_to_id=1, keep=[], now_ms=NOW)
        received: list[tuple[str, str]] = []
        with trio.fail_after(5):
            while len(received) < 2:
                received += [(n.channel, n.payload) for n in await listener.wait(0.5)]
        assert received == [(pg_queries.QUEUE_CHANNEL, ""), (pg_queries.CANCEL_CHANNEL, "t")]
    finally:
        await listener.aclose()


async def test_one_idempotency_key_on_two_instances_at_once_stores_once(pg: Db) -> None:
    from sesender.models import NewIdempotencyKey

    async with (
        open_postgres_store(pg.target, instance_id="a", pool_size=2) as a,
        open_postgres_store(pg.target, instance_id="b", pool_size=2) as b,
    ):
        receipts = []

        async def post(store: PostgresStore) -> None:
            key = NewIdempotencyKey("same", b"digest", NOW, lambda first: f"first={first}")
            receipts.append(await store.submit(submission("t", 50), idempotency=key))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post, a)
            nursery.start_soon(post, b)
        assert sorted(r.stored for r in receipts) == [0, 50]
        replayed = next(r for r in receipts if r.stored == 0).replayed
        assert replayed is not None
        assert replayed.response == "first=1"
        assert rows(a, "SELECT COUNT(*) FROM requests") == [(50,)]
