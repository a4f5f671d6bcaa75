"""The store's side of the feedback loop: record_feedback, suppressions and retry_failed.

Against a real SQLite file and a real PostgreSQL database (the ``store`` fixture), through the
Store interface only; raw SQL is used just to look at what was written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

from sesender.models import (
    Failed,
    FailureKind,
    FeedbackItem,
    FeedbackReport,
    NewMessage,
    ResultEvent,
    Sent,
    Status,
    Submission,
    Suppression,
)
from tests.unit.store.engines import AnyStore, OpenStore, rows

NOW = 1_768_471_200_000


async def sent_emails(
    store: AnyStore, topic: str, emails: Sequence[str], *, prefix: str = "ses"
) -> dict[str, int]:
    """Submit ``emails`` to ``topic`` and mark them Sent with SES ids ``<prefix>-<email>``;
    return email -> request id."""
    message = NewMessage(topic_id=topic, subject="s", body="b", emails=tuple(emails))
    await store.submit(Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW))
    batch = await store.claim_due(now_ms=NOW, limit=len(emails))
    await store.record_outcomes(
        [
            Sent(e.request_id, f"{prefix}-{e.email}", attempts=1, sent_at_ms=NOW)
            for e in batch.emails
        ],
        now_ms=NOW,
    )
    return {e.email: e.request_id for e in batch.emails}


def event(
    kind: str,
    *,
    message_id: str | None = None,
    request_id: int | None = None,
    at: int = NOW,
    detail: str | None = None,
) -> ResultEvent:
    return ResultEvent(kind, at, request_id=request_id, message_id=message_id, detail=detail)


def bounce_item(email: str, source: str | None, *, permanent: bool = True) -> FeedbackItem:
    """What the intake makes of a bounce of ``email`` (sent as ``ses-<email>``)."""
    return FeedbackItem(
        events=(event("Bounce", message_id=f"ses-{email}"),),
        suppressions=(Suppression("bounce", source or "ses", email=email),) if permanent else (),
        transient_bounces=() if permanent else (email,),
        source_id=source,
    )


# --- record_feedback ---------------------------------------------------------------------------


async def record_total(
    store: AnyStore, items: Sequence[FeedbackItem], *, now_ms: int
) -> FeedbackReport:
    """The store reports per item; these tests look at the totals of one call."""
    return FeedbackReport.total(await store.record_feedback(items, now_ms=now_ms))


async def test_events_match_by_ses_message_id_then_by_request_id(store: AnyStore) -> None:
    ids = await sent_emails(store, "t", ["a@example.org", "b@example.org"])
    report = await record_total(
        store,
        [
            FeedbackItem(events=(event("Delivery", message_id="ses-a@example.org"),)),
            # The SES id is not known yet (or never stored): the sesender tag still matches.
            FeedbackItem(
                events=(event("Delivery", message_id="unknown", request_id=ids["b@example.org"]),)
            ),
            FeedbackItem(events=(event("Delivery", message_id="nobody"),)),
            FeedbackItem(events=(event("Open", request_id=999_999),)),
        ],
        now_ms=NOW,
    )
    assert report == FeedbackReport(matched=2, duplicates=0, suppressed=0)
    assert (await store.topic_stats("t")).result_counts == {"Delivery": 2}


async def test_repeats_are_counted_per_email_and_type_but_the_topic_counts_each_email_once(
    store: AnyStore,
) -> None:
    ids = await sent_emails(store, "t", ["a@example.org"])
    for n, source in enumerate(("sns-1", "sns-2", "sns-3")):
        await record_total(
            store,
            [
                FeedbackItem(
                    events=(event("Open", request_id=ids["a@example.org"], at=NOW + n),),
                    source_id=source,
                )
            ],
            now_ms=NOW,
        )
    assert (await store.topic_stats("t")).result_counts == {"Open": 1}
    detail = await store.request_detail(ids["a@example.org"])
    assert detail is not None
    (record,) = detail.events
    assert (record.event_type, record.count, record.first_at_ms, record.last_at_ms) == (
        "Open",
        3,
        NOW,
        NOW + 2,
    )


async def test_an_sns_message_id_is_applied_once_across_and_within_commits(
    store: AnyStore,
) -> None:
    await sent_emails(store, "t", ["a@example.org", "b@example.org"])
    first = await record_total(store, [bounce_item("a@example.org", "sns-1")], now_ms=NOW)
    assert first == FeedbackReport(matched=1, duplicates=0, suppressed=1)

    # A redelivery later, and the same message twice inside one group commit.
    again = await record_total(
        store,
        [
            bounce_item("a@example.org", "sns-1"),
            bounce_item("b@example.org", "sns-2"),
            bounce_item("b@example.org", "sns-2"),
        ],
        now_ms=NOW + 1,
    )
    assert again == FeedbackReport(matched=1, duplicates=2, suppressed=1)
    assert (await store.topic_stats("t")).result_counts == {"Bounce": 2}
    assert rows(store, "SELECT count FROM results ORDER BY request_id") == [(1,), (1,)]
    assert rows(store, "SELECT message_id FROM sns_messages ORDER BY message_id") == [
        ("sns-1",),
        ("sns-2",),
    ]


async def test_items_without_a_source_id_are_never_deduplicated(store: AnyStore) -> None:
    ids = await sent_emails(store, "t", ["a@example.org"])
    item = FeedbackItem(events=(event("Open", request_id=ids["a@example.org"]),))
    for _ in range(2):
        assert await record_total(store, [item], now_ms=NOW) == FeedbackReport(matched=1)
    assert rows(store, "SELECT count FROM results") == [(2,)]
    assert rows(store, "SELECT COUNT(*) FROM sns_messages") == [(0,)]


async def test_suppressions_are_lower_cased_and_the_first_reason_is_kept(
    store: AnyStore,
) -> None:
    ids = await sent_emails(store, "t", ["Mixed.Case@Example.org", "other@example.org"])
    report = await record_total(
        store,
        [
            FeedbackItem(
                suppressions=(Suppression("bounce", "sns-1", email="Mixed.Case@Example.org"),)
            ),
            FeedbackItem(
                suppressions=(Suppression("complaint", "sns-2", email="mixed.case@example.org"),)
            ),
            # One-click unsubscribe knows only the request id of the email.
            FeedbackItem(
                suppressions=(
                    Suppression("unsubscribe", "one-click", request_id=ids["other@example.org"]),
                )
            ),
            FeedbackItem(
                suppressions=(Suppression("unsubscribe", "one-click", request_id=424242),)
            ),
        ],
        now_ms=NOW,
    )
    assert report.suppressed == 2
    entry = await store.get_suppression("MIXED.CASE@example.ORG")
    assert entry is not None
    assert (entry.email, entry.reason, entry.source, entry.created_at_ms) == (
        "mixed.case@example.org",
        "bounce",
        "sns-1",
        NOW,
    )
    other = await store.get_suppression("other@example.org")
    assert other is not None
    assert (other.reason, other.source) == ("unsubscribe", "one-click")


async def test_suppressed_addresses_end_suppressed_at_their_next_claim(store: AnyStore) -> None:
    await sent_emails(store, "t", ["gone@example.org"])
    await record_total(store, [bounce_item("gone@example.org", "sns-1")], now_ms=NOW)
    message = NewMessage(topic_id="u", subject="s", body="b", emails=("GONE@example.org",))
    await store.submit(Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW))
    batch = await store.claim_due(now_ms=NOW, limit=10)
    assert batch.emails == ()
    assert batch.suppressed == 1
    assert (await store.topic_stats("u")).request_counts == {"Suppressed": 1}


async def test_transient_bounces_are_counted_and_never_suppress_by_default(
    store: AnyStore,
) -> None:
    await sent_emails(store, "t", ["full@example.org"])
    for n in range(5):
        report = await record_total(
            store, [bounce_item("full@example.org", f"sns-{n}", permanent=False)], now_ms=NOW + n
        )
        assert report.suppressed == 0
    assert rows(store, "SELECT email, transient, last_at FROM address_bounces") == [
        ("full@example.org", 5, NOW + 4)
    ]
    assert await store.get_suppression("full@example.org") is None


async def test_suppress_after_transient_bounces_suppresses_at_the_threshold(
    open_store: OpenStore,
) -> None:
    async with open_store(suppress_after_transient=3) as store:
        await sent_emails(store, "t", ["full@example.org"])
        reports = [
            await record_total(
                store,
                [bounce_item("full@example.org", f"sns-{n}", permanent=False)],
                now_ms=NOW + n,
            )
            for n in range(2)
        ]
        # A redelivered SNS message does not count twice.
        reports.append(
            await record_total(
                store, [bounce_item("full@example.org", "sns-1", permanent=False)], now_ms=NOW
            )
        )
        assert [r.suppressed for r in reports] == [0, 0, 0]
        assert await store.get_suppression("full@example.org") is None

        # Addresses are counted case-insensitively.
        third = await record_total(
            store, [bounce_item("FULL@example.org", "sns-9", permanent=False)], now_ms=NOW + 9
        )
        assert third.suppressed == 1
        entry = await store.get_suppression("full@example.org")
        assert entry is not None
        assert (entry.reason, entry.source, entry.detail) == (
            "transient-bounces",
            "sns-9",
            "3 transient bounces",
        )

        # Removing the suppression forgets the count: the next soft bounce starts again at 1.
        assert await store.delete_suppression("full@example.org")
        fourth = await record_total(
            store, [bounce_item("full@example.org", "sns-10", permanent=False)], now_ms=NOW + 10
        )
        assert fourth.suppressed == 0
        assert rows(store, "SELECT transient FROM address_bounces") == [(1,)]


# --- the suppression list API of the store ---------------------------------------------------


async def test_put_adds_or_replaces_and_delete_removes(store: AnyStore) -> None:
    first = await store.put_suppression(
        Suppression("manual", "api", email="Someone@Example.org", detail="asked by phone"),
        now_ms=NOW,
    )
    assert (first.email, first.reason, first.source, first.detail, first.created_at_ms) == (
        "someone@example.org",
        "manual",
        "api",
        "asked by phone",
        NOW,
    )
    # A put over an existing entry replaces its reason (an operator's word wins)...
    replaced = await store.put_suppression(
        Suppression("legal hold", "api", email="someone@example.org"), now_ms=NOW + 5
    )
    assert (replaced.reason, replaced.detail) == ("legal hold", None)
    assert replaced.created_at_ms == NOW  # ...but it is still the same entry
    assert await store.delete_suppression("SOMEONE@example.org") is True
    assert await store.delete_suppression("someone@example.org") is False
    assert await store.get_suppression("someone@example.org") is None


async def put_all(store: AnyStore, emails: Iterable[str]) -> None:
    for email in emails:
        await store.put_suppression(Suppression("manual", "api", email=email), now_ms=NOW)


async def test_listing_pages_by_address_with_a_keyset_cursor(store: AnyStore) -> None:
    emails = [f"user{n:02d}@example.org" for n in range(7)]
    await put_all(store, reversed(emails))
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = await store.list_suppressions(email_contains=None, after=after, limit=3)
        pages.append([entry.email for entry in page])
        if len(page) < 3:
            break
        after = page[-1].email
    assert pages == [emails[0:3], emails[3:6], emails[6:7]]
    # The cursor is an address, not an offset: an insert before it does not shift the next page.
    await put_all(store, ["aaa@example.org"])
    page = await store.list_suppressions(email_contains=None, after=emails[2], limit=3)
    assert [entry.email for entry in page] == emails[3:6]
    assert await store.list_suppressions(email_contains=None, after="zzz", limit=3) == []


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("a_b", ["a_b@example.org"]),  # _ is a literal underscore, not "any character"
        ("%", ["50%off@example.org"]),  # % is a literal percent, not "anything"
        ("0%o", ["50%off@example.org"]),
        ("\\", []),  # a backslash (the escape character) matches only itself
        ("A_B@EXAMPLE", ["a_b@example.org"]),  # case-insensitive
        ("example.org", ["50%off@example.org", "a_b@example.org", "axb@example.org"]),
        ("nothing", []),
    ],
)
async def test_the_email_filter_is_a_literal_substring(
    store: AnyStore, needle: str, expected: list[str]
) -> None:
    await put_all(store, ["a_b@example.org", "axb@example.org", "50%off@example.org"])
    found = await store.list_suppressions(email_contains=needle, after=None, limit=100)
    assert [entry.email for entry in found] == expected


async def test_the_filter_and_the_cursor_combine(store: AnyStore) -> None:
    await put_all(store, [f"{p}{n}@example.org" for p in ("keep", "drop") for n in range(4)])
    first = await store.list_suppressions(email_contains="keep", after=None, limit=2)
    second = await store.list_suppressions(email_contains="keep", after=first[-1].email, limit=2)
    third = await store.list_suppressions(email_contains="keep", after=second[-1].email, limit=2)
    assert [e.email for e in (*first, *second)] == [f"keep{n}@example.org" for n in range(4)]
    assert third == []


# --- retry_failed --------------------------------------------------------------------------------


async def test_retry_requeues_only_transient_failures_of_the_topic(store: AnyStore) -> None:
    kinds = {
        "exhausted@example.org": FailureKind.EXHAUSTED,
        "config@example.org": FailureKind.CONFIG,
        "permanent@example.org": FailureKind.PERMANENT,
    }
    emails = [*kinds, "sent@example.org"]
    for topic in ("t", "other"):
        message = NewMessage(topic_id=topic, subject="s", body="b", emails=tuple(emails))
        await store.submit(Submission(messages=(message,), due_at_ms=NOW, created_at_ms=NOW))
    batch = await store.claim_due(now_ms=NOW, limit=100)
    await store.record_outcomes(
        [
            Sent(e.request_id, f"m{e.request_id}", attempts=1, sent_at_ms=NOW)
            if e.email == "sent@example.org"
            else Failed(e.request_id, "boom", kind=kinds[e.email], attempts=5)
            for e in batch.emails
        ],
        now_ms=NOW,
    )
    ids = {(e.topic_id, e.email): e.request_id for e in batch.emails}

    assert await store.retry_failed("t", now_ms=NOW + 1000) == 2
    assert (await store.topic_stats("t")).request_counts == {"Created": 2, "Failed": 1, "Sent": 1}
    assert (await store.topic_stats("other")).request_counts == {"Failed": 3, "Sent": 1}
    for email in ("exhausted@example.org", "config@example.org"):
        detail = await store.request_detail(ids[("t", email)])
        assert detail is not None
        # A full set of attempts again, due now, no failure kind any more.
        assert (detail.status, detail.attempts, detail.failure_kind, detail.due_at_ms) == (
            Status.CREATED,
            0,
            None,
            NOW + 1000,
        )
    permanent = await store.request_detail(ids[("t", "permanent@example.org")])
    assert permanent is not None
    assert (permanent.status, permanent.failure_kind, permanent.attempts) == (
        Status.FAILED,
        FailureKind.PERMANENT,
        5,
    )
    # The requeued emails are claimable at once; a second retry finds nothing more to do.
    assert await store.next_due_at() == NOW + 1000
    assert await store.retry_failed("t", now_ms=NOW + 2000) == 0
    assert await store.retry_failed("no-such-topic", now_ms=NOW) == 0
