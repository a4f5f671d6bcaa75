"""The reputation guard's store: counters kept by triggers, the window, durable holds, ``Held``.

On both engines (the ``store`` fixture: SQLite and PostgreSQL), through the Store interface;
feedback goes through ``record_feedback`` exactly as the SNS intake writes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sesender.models import (
    Deferred,
    FeedbackItem,
    GuardCounts,
    HoldScope,
    NewMessage,
    ResultEvent,
    Sent,
    Status,
    Submission,
)
from tests.unit.store.engines import AnyStore, OpenStore

NOW = 1_768_471_200_000  # a whole 10-second bucket


async def submit(store: AnyStore, topic: str, count: int, *, at: int = NOW) -> None:
    emails = tuple(f"{topic}-{i}@example.com" for i in range(count))
    message = NewMessage(topic_id=topic, subject="s", body="b", emails=emails)
    await store.submit(Submission(messages=(message,), due_at_ms=at, created_at_ms=at))


async def send(store: AnyStore, count: int, *, at: int = NOW) -> list[int]:
    """Claim ``count`` due emails and record them Sent at ``at``; return their ids."""
    batch = await store.claim_due(now_ms=at, limit=count)
    await store.record_outcomes(
        [
            Sent(e.request_id, f"ses-{e.request_id}", attempts=1, sent_at_ms=at)
            for e in batch.emails
        ],
        now_ms=at,
    )
    return [e.request_id for e in batch.emails]


def bounce(request_id: int, bounce_type: str = "Permanent") -> FeedbackItem:
    detail = json.dumps({"recipient": "x@example.com", "bounce_type": bounce_type})
    return FeedbackItem(
        events=(ResultEvent("Bounce", NOW + 5_000, message_id=f"ses-{request_id}", detail=detail),),
        source_id=f"sns-bounce-{request_id}-{bounce_type}",
    )


def complaint(request_id: int, feedback_type: str = "abuse") -> FeedbackItem:
    detail = json.dumps({"recipient": "x@example.com", "feedback_type": feedback_type})
    return FeedbackItem(
        events=(
            ResultEvent("Complaint", NOW + 5_000, message_id=f"ses-{request_id}", detail=detail),
        ),
        source_id=f"sns-complaint-{request_id}-{feedback_type}",
    )


async def feed(store: AnyStore, items: Sequence[FeedbackItem]) -> None:
    await store.record_feedback(items, now_ms=NOW + 6_000)


async def test_sends_permanent_bounces_and_complaints_are_counted_per_topic_and_account(
    store: AnyStore,
) -> None:
    await submit(store, "bad", 10)
    await submit(store, "good", 10)
    sent = await send(store, 20)
    bad, good = sent[:10], sent[10:]
    await feed(
        store,
        [
            bounce(bad[0]),
            bounce(bad[1]),
            bounce(bad[1]),  # a repeat (another SNS message): one email bounces once
            bounce(bad[2], "Transient"),  # not a permanent bounce
            complaint(good[0]),
            complaint(good[1], "not-spam"),  # says the opposite of a complaint
        ],
    )
    counts = await store.reputation_counts(since_ms=NOW - 60_000)
    assert counts.account == GuardCounts(sends=20, bounces=2, complaints=1)
    assert counts.topics == {"bad": GuardCounts(sends=10, bounces=2, complaints=0)}
    # A transient bounce followed by a permanent one for the same email counts once, then.
    await feed(store, [bounce(bad[2])])
    counts = await store.reputation_counts(since_ms=NOW - 60_000)
    assert counts.account.bounces == 3
    assert counts.topics["bad"].bounces == 3


async def test_the_window_counts_only_recent_sends(store: AnyStore) -> None:
    await submit(store, "t", 4, at=NOW - 3_600_000)
    old = await send(store, 2, at=NOW - 3_600_000)  # an hour ago
    recent = await send(store, 2, at=NOW)
    await feed(store, [bounce(old[0]), bounce(recent[0])])
    last_minute = await store.reputation_counts(since_ms=NOW - 60_000)
    assert last_minute.account == GuardCounts(sends=2, bounces=1)
    two_hours = await store.reputation_counts(since_ms=NOW - 7_200_000)
    assert two_hours.account == GuardCounts(sends=4, bounces=2)


async def test_a_held_topic_holds_queued_claimed_and_later_emails_until_resumed(
    store: AnyStore,
) -> None:
    await submit(store, "held", 6)
    await submit(store, "other", 2)
    sent = await send(store, 1)
    in_pipeline = await store.claim_due(now_ms=NOW, limit=2)  # claimed before the hold
    assert await store.hold_topic("held", reason="bounces", now_ms=NOW) == 3
    assert await store.hold_topic("held", reason="again", now_ms=NOW) == -1  # already held
    # The claimed ones come back deferred (the pipeline does not hand them over): Held.
    await store.record_outcomes(
        [Deferred(e.request_id, due_at_ms=NOW) for e in in_pipeline.emails], now_ms=NOW
    )
    await submit(store, "held", 1)  # accepted after the hold: ends Held when claimed
    claimed = await store.claim_due(now_ms=NOW, limit=100)
    assert {e.topic_id for e in claimed.emails} == {"other"}
    assert (await store.topic_stats("held")).request_counts == {"Sent": 1, "Held": 6}
    (hold,) = await store.reputation_holds()
    assert (hold.scope, hold.topic_id, hold.reason) == (HoldScope.TOPIC, "held", "bounces")

    assert await store.resume_topic("held", now_ms=NOW + 1) == 6
    assert await store.resume_topic("held", now_ms=NOW + 2) is None  # not held any more
    assert await store.reputation_holds() == []
    again = await store.claim_due(now_ms=NOW + 1, limit=100)
    assert len(again.emails) == 6
    assert {e.topic_id for e in again.emails} == {"held"}
    assert sent  # the one sent before the hold stays Sent
    assert (await store.topic_stats("held")).request_counts == {"Sent": 1, "Processed": 6}


async def test_cancelling_a_held_topic_stops_its_held_emails(store: AnyStore) -> None:
    await submit(store, "t", 3)
    await store.hold_topic("t", reason="bounces", now_ms=NOW)
    stopped = await store.stop_topic("t", up_to_id=3, keep=(), now_ms=NOW)
    assert stopped.stopped == 3
    assert (await store.topic_stats("t")).request_counts == {"Stopped": 3}


async def test_after_a_resume_the_window_starts_again(store: AnyStore) -> None:
    await submit(store, "t", 4)
    sent = await send(store, 2)
    await feed(store, [bounce(sent[0])])
    await store.hold_topic("t", reason="bounces", now_ms=NOW + 1_000)
    await store.hold_account(reason="bounces", now_ms=NOW + 1_000)
    assert await store.resume_topic("t", now_ms=NOW + 2_000) == 2  # the two still queued
    assert await store.resume_account(now_ms=NOW + 2_000)
    assert not await store.resume_account(now_ms=NOW + 2_000)
    counts = await store.reputation_counts(since_ms=NOW - 60_000)
    assert counts.account == GuardCounts()
    assert counts.topics == {}
    later = await send(store, 2, at=NOW + 20_000)  # two buckets on
    await feed(store, [bounce(later[0])])
    counts = await store.reputation_counts(since_ms=NOW - 60_000)
    assert counts.account == GuardCounts(sends=2, bounces=1)
    assert counts.topics == {"t": GuardCounts(sends=2, bounces=1)}


async def test_holds_outlive_a_restart(open_store: OpenStore) -> None:
    async with open_store() as store:
        await submit(store, "t", 2)
        await store.hold_topic("t", reason="topic bounces", now_ms=NOW)
        assert await store.hold_account(reason="account complaints", now_ms=NOW + 1)
        assert not await store.hold_account(reason="again", now_ms=NOW + 2)
    async with open_store() as store:
        holds = await store.reputation_holds()
        assert [(h.scope, h.topic_id, h.reason) for h in holds] == [
            (HoldScope.TOPIC, "t", "topic bounces"),
            (HoldScope.ACCOUNT, "", "account complaints"),
        ]
        assert (await store.topic_stats("t")).request_counts == {"Held": 2}
        await store.recover_claimed(now_ms=NOW)
        assert (await store.claim_due(now_ms=NOW, limit=10)).emails == ()
        assert Status.HELD.label == "Held"
