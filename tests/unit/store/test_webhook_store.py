"""The store's side of outbound webhooks: events written by triggers in the transactions that
record what they report, only for enabled subscribers; claims under a lease; attempts recorded in
bulk with the endpoint's health; pruning.

On both engines (the ``store`` fixture: a SQLite file, a PostgreSQL database), through the
store's interface; raw SQL (``engines.rows``) only to look at what was written. The last tests
are PostgreSQL's own (several instances on one database): which leases a starting instance frees,
claims in flight skipping each other, and two transactions finishing one topic at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import psycopg
import pytest

from sesender.models import (
    Failed,
    FailureKind,
    FeedbackItem,
    NewMessage,
    ResultEvent,
    Retry,
    Sent,
    Stopped,
    Submission,
    Suppression,
)
from sesender.store import pg_webhooks
from sesender.store.postgres import PostgresStore
from sesender.store.sqlite import SqliteStore
from sesender.webhooks.events import EVENT_TYPES
from sesender.webhooks.models import (
    AttemptOutcome,
    AttemptResult,
    EndpointChanges,
    EventState,
    NewEndpoint,
    PendingEvent,
)
from tests.unit.store.engines import AnyStore, rows
from tests.waiting import wait_for

NOW = 1_768_471_200_000
DAY = 86_400_000


def endpoint(endpoint_id: str, *types: str) -> NewEndpoint:
    return NewEndpoint(
        endpoint_id=endpoint_id,
        url=f"https://hooks.example.com/{endpoint_id}",
        event_types=types or EVENT_TYPES,
        description="",
        secret="whsec_" + "A" * 43,
    )


async def submit(store: AnyStore, topic: str, count: int) -> list[int]:
    message = NewMessage(
        topic_id=topic,
        subject="s",
        body="b",
        emails=tuple(f"user{i}@example.com" for i in range(count)),
    )
    await store.submit(Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW))
    batch = await store.claim_due(now_ms=NOW, limit=count)
    return [email.request_id for email in batch.emails]


def event_types(store: AnyStore, endpoint_id: str | None = None) -> Counter[str]:
    where = "" if endpoint_id is None else " WHERE endpoint_id = ?"
    args = () if endpoint_id is None else (endpoint_id,)
    return Counter(
        str(row[0]) for row in rows(store, f"SELECT event_type FROM webhook_events{where}", *args)
    )


async def test_no_event_row_without_a_subscriber(store: AnyStore) -> None:
    ids = await submit(store, "t", 3)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    assert event_types(store) == Counter()


async def test_outcomes_of_a_bulk_batch_make_one_event_per_email_and_subscriber(
    store: AnyStore,
) -> None:
    await store.create_webhook(endpoint("ep_all"), now_ms=NOW)
    await store.create_webhook(endpoint("ep_sent", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 5)
    await store.record_outcomes(
        [
            *(Sent(i, f"m{i}", 1, NOW) for i in ids[:3]),
            Failed(ids[3], "rejected", FailureKind.PERMANENT, 1),
            Retry(ids[4], "throttled", 1, NOW + 1000),
        ],
        now_ms=NOW,
    )
    assert event_types(store, "ep_all") == Counter({"email.sent": 3, "email.failed": 1})
    assert event_types(store, "ep_sent") == Counter({"email.sent": 3})
    (detail,) = rows(store, "SELECT detail FROM webhook_events WHERE event_type = 'email.failed'")[
        0
    ]
    assert json.loads(str(detail)) == {"error": "rejected", "failure_kind": "permanent"}
    # The retried email is still pending: no topic.completed yet; it completes when it ends.
    batch = await store.claim_due(now_ms=NOW + 1000, limit=10)
    await store.record_outcomes([Stopped(batch.emails[0].request_id)], now_ms=NOW + 1000)
    assert event_types(store, "ep_all")["email.stopped"] == 1
    assert event_types(store, "ep_all")["topic.completed"] == 1
    ids_unique = {row[0] for row in rows(store, "SELECT event_id FROM webhook_events")}
    assert len(ids_unique) == 3 + 1 + 1 + 1 + 3


async def test_feedback_events_carry_the_email_and_whether_the_address_is_suppressed(
    store: AnyStore,
) -> None:
    await store.create_webhook(endpoint("ep"), now_ms=NOW)
    ids = await submit(store, "t", 2)
    await store.record_outcomes([Sent(i, f"ses-{i}", 1, NOW) for i in ids], now_ms=NOW)
    bounce_detail = json.dumps({"bounce_type": "Permanent", "sub_type": "General"})
    await store.record_feedback(
        [
            FeedbackItem(
                events=(
                    ResultEvent("Bounce", NOW, message_id=f"ses-{ids[0]}", detail=bounce_detail),
                ),
                suppressions=(
                    Suppression(reason="bounce", source="sns-1", email="user0@example.com"),
                ),
                source_id="sns-1",
            ),
            FeedbackItem(events=(ResultEvent("Open", NOW, request_id=ids[1]),)),
            FeedbackItem(events=(ResultEvent("Open", NOW + 5, request_id=ids[1]),)),
            FeedbackItem(events=(ResultEvent("Click", NOW + 6, request_id=ids[1]),)),
            FeedbackItem(events=(ResultEvent("Delivery", NOW, message_id=f"ses-{ids[1]}"),)),
        ],
        now_ms=NOW,
    )
    counts = event_types(store)
    assert counts["email.bounced"] == 1
    assert counts["email.opened"] == 2  # every open that happened, not once per email
    assert counts["email.clicked"] == 1
    assert counts["email.delivered"] == 1
    bounced = rows(
        store,
        "SELECT request_id, email, message_id, suppressed FROM webhook_events"
        " WHERE event_type = 'email.bounced'",
    )
    assert bounced == [(ids[0], "user0@example.com", f"ses-{ids[0]}", 1)]
    opened = rows(store, "SELECT suppressed FROM webhook_events WHERE event_type = 'email.opened'")
    assert opened == [(0,), (0,)]


async def test_disabling_stops_events_and_enabling_resumes_them(store: AnyStore) -> None:
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 4)
    disabled = await store.update_webhook("ep", EndpointChanges(enabled=False), now_ms=NOW)
    assert disabled is not None
    assert not disabled.enabled
    assert disabled.disabled_reason == "disabled through the API"
    await store.record_outcomes([Sent(ids[0], "m0", 1, NOW)], now_ms=NOW)
    assert event_types(store) == Counter()
    enabled = await store.update_webhook(
        "ep", EndpointChanges(enabled=True, event_types=("email.failed",)), now_ms=NOW
    )
    assert enabled is not None
    assert enabled.enabled
    assert enabled.disabled_reason is None
    await store.record_outcomes(
        [Sent(ids[1], "m1", 1, NOW), Failed(ids[2], "x", FailureKind.PERMANENT, 1)], now_ms=NOW
    )
    assert event_types(store) == Counter({"email.failed": 1})
    assert await store.delete_webhook("ep")
    await store.record_outcomes([Failed(ids[3], "x", FailureKind.PERMANENT, 1)], now_ms=NOW)
    assert event_types(store) == Counter()


async def claim(
    store: AnyStore, endpoint_id: str, now: int, limit: int = 100
) -> list[PendingEvent]:
    return await store.claim_webhook_events(
        endpoint_id, now_ms=now, lease_until_ms=now + 60_000, limit=limit
    )


def result(event: PendingEvent, outcome: AttemptOutcome, at: int, **extra: object) -> AttemptResult:
    return AttemptResult(
        row_id=event.row_id,
        event_id=event.event_id,
        endpoint_id=event.endpoint_id,
        event_type=event.event_type,
        attempt=event.attempts + 1,
        attempted_at_ms=at,
        duration_ms=3,
        status_code=extra.pop("status_code", 200),  # type: ignore[arg-type]
        error=extra.pop("error", None),  # type: ignore[arg-type]
        outcome=outcome,
        due_at_ms=extra.pop("due_at_ms", at),  # type: ignore[arg-type]
    )


async def test_a_leased_event_is_not_claimed_again_until_its_lease_runs_out(
    store: AnyStore,
) -> None:
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 3)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    first = await claim(store, "ep", NOW, limit=2)
    assert [e.request_id for e in first] == ids[:2]
    second = await claim(store, "ep", NOW + 1)
    assert [e.request_id for e in second] == ids[2:]
    assert await claim(store, "ep", NOW + 2) == []
    again = await claim(store, "ep", NOW + 60_001)  # leases ran out: claimable, same ids
    assert {e.event_id for e in again} == {e.event_id for e in first + second}
    if isinstance(store, SqliteStore):  # the only deliverer: at start every lease is freed
        assert await store.release_webhook_leases() == 3
        assert len(await claim(store, "ep", NOW + 60_002)) == 3


async def test_a_deliverer_process_frees_only_expired_leases_at_start(store: AnyStore) -> None:
    """``sesender deliver-webhooks`` may run several times beside itself, on SQLite too: a
    starting one frees no lease that still runs (by the wall clock), only those that ran out."""
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 2)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    wall = int(time.time() * 1000)
    (expired,) = await store.claim_webhook_events(
        "ep", now_ms=NOW, lease_until_ms=wall - 1, limit=1
    )
    (running,) = await store.claim_webhook_events(
        "ep", now_ms=NOW, lease_until_ms=wall + 3_600_000, limit=1
    )
    assert await store.release_webhook_leases(only_expired=True) == 1
    assert rows(store, "SELECT event_id FROM webhook_events WHERE lease_until IS NOT NULL") == [
        (running.event_id,)
    ]
    (again,) = await claim(store, "ep", wall)
    assert again.event_id == expired.event_id


@pytest.mark.parametrize("engine", ["postgres"])
async def test_postgres_frees_only_expired_leases_at_start(store: AnyStore) -> None:
    """On PostgreSQL other live instances hold leases: a starting instance frees none that still
    runs (by the wall clock), only those that ran out."""
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 2)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    wall = int(time.time() * 1000)
    (expired,) = await store.claim_webhook_events(
        "ep", now_ms=NOW, lease_until_ms=wall - 1, limit=1
    )
    (running,) = await store.claim_webhook_events(
        "ep", now_ms=NOW, lease_until_ms=wall + 3_600_000, limit=1
    )
    assert await store.release_webhook_leases() == 1
    assert rows(store, "SELECT event_id FROM webhook_events WHERE lease_until IS NOT NULL") == [
        (running.event_id,)
    ]
    (again,) = await claim(store, "ep", wall)
    assert again.event_id == expired.event_id


async def test_recorded_attempts_set_states_log_and_endpoint_health(store: AnyStore) -> None:
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 3)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    events = await claim(store, "ep", NOW)
    disabled = await store.record_webhook_attempts(
        [
            result(events[0], AttemptOutcome.DELIVERED, NOW + 10),
            result(
                events[1],
                AttemptOutcome.RETRY,
                NOW + 20,
                status_code=500,
                error="HTTP 500: boom",
                due_at_ms=NOW + 5000,
            ),
            result(events[2], AttemptOutcome.FAILED, NOW + 30, status_code=None, error="refused"),
        ],
        now_ms=NOW + 40,
        disable_after_ms=5 * DAY,
    )
    assert disabled == []
    found = await store.get_webhook("ep")
    assert found is not None
    assert found.pending == 1
    assert found.failed == 1
    assert found.failing_since_ms == NOW + 20
    assert found.last_error == "refused"
    assert found.last_success_at_ms == NOW + 10
    assert await claim(store, "ep", NOW + 4999) == []  # not due before its backoff
    (retried,) = await claim(store, "ep", NOW + 5000)
    assert retried.event_id == events[1].event_id
    assert retried.attempts == 1
    attempts = await store.webhook_attempts("ep", since_ms=NOW - DAY, limit=10)
    assert [a.outcome for a in attempts] == ["failed", "retry", "delivered"]
    failed = await store.webhook_events("ep", state=EventState.FAILED, limit=10)
    assert [e.event_id for e in failed] == [events[2].event_id]
    assert await store.resend_webhook_event("ep", events[2].event_id, now_ms=NOW + 6000)
    assert not await store.resend_webhook_event("ep", events[2].event_id, now_ms=NOW + 6000)
    (resent,) = await claim(store, "ep", NOW + 6000)
    assert resent.event_id == events[2].event_id
    assert resent.attempts == 0


async def test_gone_and_long_failure_disable_the_endpoint(store: AnyStore) -> None:
    await store.create_webhook(endpoint("gone", "email.sent"), now_ms=NOW)
    await store.create_webhook(endpoint("dead", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 1)
    await store.record_outcomes([Sent(ids[0], "m", 1, NOW)], now_ms=NOW)
    (to_gone,) = await claim(store, "gone", NOW)
    (to_dead,) = await claim(store, "dead", NOW)
    disabled = await store.record_webhook_attempts(
        [
            result(to_gone, AttemptOutcome.GONE, NOW, status_code=410, error="HTTP 410"),
            result(to_dead, AttemptOutcome.RETRY, NOW, status_code=503, error="HTTP 503"),
        ],
        now_ms=NOW,
        disable_after_ms=5 * DAY,
    )
    assert disabled == ["gone"]
    gone = await store.get_webhook("gone")
    assert gone is not None
    assert not gone.enabled
    assert "410" in str(gone.disabled_reason)
    assert [t.endpoint_id for t in await store.webhook_targets(now_ms=NOW)] == ["dead"]
    (again,) = await store.claim_webhook_events(
        "dead", now_ms=NOW + 5 * DAY, lease_until_ms=NOW + 5 * DAY + 1, limit=1
    )
    disabled = await store.record_webhook_attempts(
        [result(again, AttemptOutcome.RETRY, NOW + 5 * DAY, status_code=503, error="HTTP 503")],
        now_ms=NOW + 5 * DAY,
        disable_after_ms=5 * DAY,
    )
    assert disabled == ["dead"]
    dead = await store.get_webhook("dead")
    assert dead is not None
    assert "every delivery failed since" in str(dead.disabled_reason)


async def test_rotation_signs_with_both_secrets_for_the_grace_period(store: AnyStore) -> None:
    await store.create_webhook(endpoint("ep"), now_ms=NOW)
    rotated = await store.rotate_webhook_secret(
        "ep", "whsec_" + "B" * 43, keep_until_ms=NOW + DAY, now_ms=NOW
    )
    assert rotated is not None
    assert rotated.secret.startswith("whsec_B")
    (target,) = await store.webhook_targets(now_ms=NOW + DAY - 1)
    assert target.secrets == ("whsec_" + "B" * 43, "whsec_" + "A" * 43)
    (target,) = await store.webhook_targets(now_ms=NOW + DAY)
    assert target.secrets == ("whsec_" + "B" * 43,)
    assert "whsec" not in repr(rotated)
    assert "whsec" not in repr(target)


async def test_pruning_forgets_delivered_events_then_failed_ones_and_old_attempts(
    store: AnyStore,
) -> None:
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 2)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    events = await claim(store, "ep", NOW)
    await store.record_webhook_attempts(
        [
            result(events[0], AttemptOutcome.DELIVERED, NOW),
            result(events[1], AttemptOutcome.FAILED, NOW, status_code=500, error="x"),
        ],
        now_ms=NOW,
        disable_after_ms=5 * DAY,
    )
    assert await store.prune_webhooks(delivered_before_ms=NOW, failed_before_ms=NOW) == (0, 0)
    assert await store.prune_webhooks(delivered_before_ms=NOW + 1, failed_before_ms=NOW) == (1, 0)
    assert await store.prune_webhooks(delivered_before_ms=NOW + 1, failed_before_ms=NOW + 1) == (
        1,
        2,
    )
    assert rows(store, "SELECT COUNT(*) FROM webhook_events") == [(0,)]


async def test_attempts_of_a_deleted_endpoint_leave_nothing_behind(store: AnyStore) -> None:
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 1)
    await store.record_outcomes([Sent(ids[0], "m", 1, NOW)], now_ms=NOW)
    (event,) = await claim(store, "ep", NOW)
    assert await store.delete_webhook("ep")
    disabled = await store.record_webhook_attempts(
        [result(event, AttemptOutcome.DELIVERED, NOW)], now_ms=NOW, disable_after_ms=5 * DAY
    )
    assert disabled == []
    assert rows(store, "SELECT COUNT(*) FROM webhook_attempts") == [(0,)]
    assert rows(store, "SELECT COUNT(*) FROM webhook_events") == [(0,)]


async def test_an_unsubscribe_makes_one_event_saying_the_address_is_suppressed(
    store: AnyStore,
) -> None:
    await store.create_webhook(endpoint("ep", "email.unsubscribed", "email.suppressed"), now_ms=NOW)
    (request_id,) = await submit(store, "t", 1)
    await store.record_outcomes([Sent(request_id, "m", 1, NOW)], now_ms=NOW)
    await store.record_feedback(
        [
            FeedbackItem(  # what POST /v1/unsubscribe records
                events=(ResultEvent("Unsubscribe", NOW, request_id=request_id),),
                suppressions=(
                    Suppression(reason="unsubscribe", source="one-click", request_id=request_id),
                ),
            )
        ],
        now_ms=NOW,
    )
    assert rows(store, "SELECT event_type, request_id, suppressed FROM webhook_events") == [
        ("email.unsubscribed", request_id, 1)
    ]
    # The next email to the address ends Suppressed when claimed: one email.suppressed event.
    assert await submit(store, "t2", 1) == []  # nothing handed out: it was suppressed
    assert rows(
        store,
        "SELECT e.request_id, r.topic_id FROM webhook_events AS e JOIN requests AS r"
        " ON r.id = e.request_id WHERE e.event_type = 'email.suppressed'",
    ) == [(request_id + 1, "t2")]


@pytest.mark.parametrize("engine", ["postgres"])
async def test_two_instances_finishing_one_topic_at_once_report_it_completed_once(
    store: AnyStore,
) -> None:
    """Two transactions each finish one of a topic's last two emails (one sent from Processed,
    one stopped from Created: they share no counter row, so nothing else orders them): the second
    one's check waits for the first one's commit (the per-topic lock), so topic.completed is
    reported once, not lost because each saw the other's email still pending."""
    assert isinstance(store, PostgresStore)
    await store.create_webhook(endpoint("ep", "topic.completed"), now_ms=NOW)
    message = NewMessage(topic_id="race", subject="s", body="b", emails=("a@x.com", "b@x.com"))
    await store.submit(Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW))
    (claimed,) = (await store.claim_due(now_ms=NOW, limit=1)).emails  # the other stays Created
    first = claimed.request_id
    with psycopg.connect(store.url) as one, psycopg.connect(store.url) as other:
        one.execute(  # sent; its transaction stays open
            "UPDATE requests SET status = 2, sent_at = %s, updated_at = %s WHERE id = %s",
            (NOW, NOW, first),
        )
        pid = other.info.backend_pid

        def finish_other() -> None:
            other.execute(
                "UPDATE requests SET status = 4, updated_at = %s WHERE topic_id = 'race'"
                " AND status = 0",
                (NOW,),
            )
            other.commit()

        thread = threading.Thread(target=finish_other)
        thread.start()
        try:
            waiting = wait_for(
                lambda: rows(
                    store,
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'",
                    pid,
                ),
                timeout=10,
                what="the second transaction waiting for the topic's lock",
            )
            assert waiting
        finally:
            one.commit()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert event_types(store) == Counter({"topic.completed": 1})


@pytest.mark.parametrize("engine", ["postgres"])
async def test_concurrent_claims_on_postgres_skip_each_others_rows_without_waiting(
    store: AnyStore,
) -> None:
    """A claim still in flight (its transaction open) holds its rows: another instance's claim
    takes the rest at once instead of waiting (SKIP LOCKED), and after the commit the first
    claim's leases keep them out of every other claim."""
    assert isinstance(store, PostgresStore)
    await store.create_webhook(endpoint("ep", "email.sent"), now_ms=NOW)
    ids = await submit(store, "t", 3)
    await store.record_outcomes([Sent(i, f"m{i}", 1, NOW) for i in ids], now_ms=NOW)
    with psycopg.connect(store.url) as one, psycopg.connect(store.url, autocommit=True) as other:
        other.execute("SET lock_timeout = '5s'")  # waiting would be the failure, not a hang
        held = pg_webhooks.claim_events(one, "ep", NOW, NOW + 60_000, 2)  # not committed yet
        rest = pg_webhooks.claim_events(other, "ep", NOW, NOW + 60_000, 10)
        assert [e.request_id for e in held] == ids[:2]
        assert [e.request_id for e in rest] == ids[2:]
        one.commit()
        assert pg_webhooks.claim_events(other, "ep", NOW + 1, NOW + 60_000, 10) == []
