"""The store's side of click tracking: links stored at submission, the redirect target, record_click
(unique per email and link, per-link counters that survive pruning per-email rows), SES clicks
matched by message id, and the tracking choices handed to the pipeline. On both engines."""

from __future__ import annotations

from sesender.models import (
    ClickEvent,
    FeedbackItem,
    LinkStats,
    NewMessage,
    ResultEvent,
    Sent,
    Submission,
)
from tests.unit.store.engines import AnyStore, OpenStore, rows

NOW = 1_768_471_200_000
SENT_AT = NOW + 1_000
LINKS = ("https://a.example/?x=1#f", "https://b.example/")


async def tracked_topic(store: AnyStore, topic: str = "news", count: int = 3) -> list[int]:
    """``count`` emails of one tracked message, sent at ``SENT_AT`` with SES ids ``ses-<id>``."""
    message = NewMessage(
        topic_id=topic,
        subject="s",
        body="<a href='https://a.example/?x=1#f'>a</a><a href='https://b.example/'>b</a>",
        emails=tuple(f"r{n}@example.org" for n in range(count)),
        track_opens=False,
        track_clicks=True,
        links=LINKS,
    )
    untracked = NewMessage(topic_id="plain", subject="s", body="x", emails=("p@example.org",))
    await store.submit(Submission(messages=(message, untracked), due_at_ms=NOW, created_at_ms=NOW))
    batch = await store.claim_due(now_ms=NOW, limit=count + 1)
    await store.record_outcomes(
        [Sent(e.request_id, f"ses-{e.request_id}", 1, SENT_AT) for e in batch.emails],
        now_ms=SENT_AT,
    )
    tracked = [e for e in batch.emails if e.topic_id == topic]
    assert all(e.track_clicks and e.track_opens is False for e in tracked)
    (plain,) = [e for e in batch.emails if e.topic_id == "plain"]
    assert plain.track_clicks is False
    assert plain.track_opens is True
    return [e.request_id for e in tracked]


async def test_the_redirect_target_is_the_stored_link_of_a_tracked_email(
    store: AnyStore,
) -> None:
    ids = await tracked_topic(store)
    assert await store.click_target(ids[0], 0) == LINKS[0]
    assert await store.click_target(ids[2], 1) == LINKS[1]
    assert await store.click_target(ids[0], 2) is None  # no such link
    assert await store.click_target(ids[-1] + 1, 0) is None  # the untracked email
    assert await store.click_target(10**9, 0) is None


async def test_the_target_remembered_at_submission_is_the_one_in_the_database(
    open_store: OpenStore,
) -> None:
    probes = [(request_id, position) for request_id in range(1, 10) for position in range(3)]
    async with open_store() as store:
        ids = await tracked_topic(store)
        # The same content again, its links found otherwise this time (as after a change of
        # SERVER_URL): the content keeps its first list, and that is the list remembered.
        again = NewMessage(
            topic_id="again",
            subject="s",
            body="<a href='https://a.example/?x=1#f'>a</a><a href='https://b.example/'>b</a>",
            emails=("x@example.org", "y@example.org"),
            track_clicks=True,
            links=LINKS[:1],
        )
        await store.submit(Submission(messages=(again,), due_at_ms=NOW, created_at_ms=NOW))
        remembered = [await store.click_target(*probe) for probe in probes]
    async with open_store() as fresh:  # nothing in memory: every answer read from the database
        read = [await fresh.click_target(*probe) for probe in probes]
    assert remembered == read
    assert remembered[probes.index((ids[1], 1))] == LINKS[1]
    assert remembered[probes.index((ids[-1] + 3, 1))] == LINKS[1]  # the second submission's
    assert remembered.count(None) == len(probes) - 2 * (len(ids) + 2)


async def test_clicks_count_once_per_email_and_link_and_in_total(store: AnyStore) -> None:
    ids = await tracked_topic(store)
    first = await store.record_click(
        ClickEvent(NOW + 5_000, request_id=ids[0], position=0, user_agent="UA"), now_ms=NOW
    )
    assert first is not None
    assert (first.unique, first.url, first.topic_id, first.delay_ms) == (
        True,
        LINKS[0],
        "news",
        4_000,
    )
    again = await store.record_click(
        ClickEvent(NOW + 9_000, request_id=ids[0], position=0), now_ms=NOW
    )
    assert again is not None
    assert again.unique is False
    other_link = await store.record_click(
        ClickEvent(NOW + 9_000, request_id=ids[0], position=1), now_ms=NOW
    )
    assert other_link is not None
    assert other_link.unique is True
    await store.record_click(ClickEvent(NOW + 9_000, request_id=ids[1], position=0), now_ms=NOW)
    # Unknown email or link: nothing recorded.
    assert (
        await store.record_click(ClickEvent(NOW, request_id=10**9, position=0), now_ms=NOW) is None
    )
    assert (
        await store.record_click(ClickEvent(NOW, request_id=ids[2], position=7), now_ms=NOW) is None
    )

    stats = await store.topic_stats("news")
    assert stats.result_counts["Click"] == 2  # two emails clicked
    assert stats.total_clicks == 4
    assert await store.topic_links("news") == [
        LinkStats(LINKS[0], unique_clicks=2, total_clicks=3),
        LinkStats(LINKS[1], unique_clicks=1, total_clicks=1),
    ]
    detail = await store.request_detail(ids[0])
    assert detail is not None
    (click,) = [event for event in detail.events if event.event_type == "Click"]
    assert click.count == 3


async def test_per_link_counts_survive_pruning_per_email_rows(store: AnyStore) -> None:
    ids = await tracked_topic(store)
    for request_id in ids:
        await store.record_click(
            ClickEvent(NOW + 2_000, request_id=request_id, position=1), now_ms=NOW
        )
    rows(store, "DELETE FROM email_link_clicks")
    rows(store, "DELETE FROM results")
    assert await store.topic_links("news") == [
        LinkStats(LINKS[1], unique_clicks=3, total_clicks=3),
        LinkStats(LINKS[0], unique_clicks=0, total_clicks=0),
    ]
    assert (await store.topic_stats("news")).total_clicks == 3


async def test_ses_clicks_and_opens_join_sesenders_own_without_double_counting(
    store: AnyStore,
) -> None:
    ids = await tracked_topic(store)
    ses_click = ClickEvent(
        NOW + 3_000, message_id=f"ses-{ids[1]}", url="https://untracked.example/", source="ses"
    )
    own_open = ResultEvent("Open", NOW + 2_000, request_id=ids[1])
    ses_open = ResultEvent("Open", NOW + 2_500, message_id=f"ses-{ids[1]}")
    reports = await store.record_feedback(
        [
            FeedbackItem(events=(own_open,)),
            FeedbackItem(events=(ses_open,), source_id="sns-1"),
            FeedbackItem(clicks=(ses_click,), source_id="sns-2"),
            FeedbackItem(clicks=(ses_click,), source_id="sns-2"),  # SNS redelivery
        ],
        now_ms=NOW,
    )
    assert [report.matched for report in reports] == [1, 1, 1, 0]
    await store.record_click(ClickEvent(NOW + 4_000, request_id=ids[1], position=0), now_ms=NOW)
    stats = await store.topic_stats("news")
    assert stats.result_counts["Open"] == 1
    assert stats.result_counts["Click"] == 1
    assert stats.total_clicks == 2
    links = {link.url: link for link in await store.topic_links("news")}
    assert links["https://untracked.example/"] == LinkStats("https://untracked.example/", 1, 1)
    assert links[LINKS[0]] == LinkStats(LINKS[0], 1, 1)
