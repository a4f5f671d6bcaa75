"""FeedbackIntake and feedback_item: from an SNS body to what the store is asked to write.

The write function is injected (a recorder returning a scripted report), the verifier is the real
``SnsVerifier`` with a ``MemoryCertificateFetcher`` serving the test certificate and a
fixed clock, and the subscription confirmer is a recorder: no network, no database, except in the
last tests, which put the real ResultWriter and SQLite store behind the intake to check what each
caller is told when several SNS messages share one group commit.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import open_pipe
from sesender.errors import SnsMalformed, SnsSignatureInvalid, StoreError, SubscriptionConfirmFailed
from sesender.feedback.intake import (
    FeedbackIntake,
    IntakeOutcome,
    feedback_item,
)
from sesender.feedback.ses_events import parse_ses_event
from sesender.feedback.sns import SnsVerifier, parse_envelope
from sesender.feedback.testing import (
    DEFAULT_TEST_CERT_URL,
    MemoryCertificateFetcher,
    SnsMessageSigner,
)
from sesender.models import ClickEvent, FeedbackItem, FeedbackReport, NewMessage, Sent, Submission
from sesender.pipeline.result_writer import ResultWrite, ResultWriter, write_and_wait
from sesender.store.sqlite import open_sqlite_store

#: The clock of every verifier here: after the SNS fixtures' Timestamps (10:00 to 12:30).
NOW = datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
NOW_TEXT = "2026-01-15T12:59:00.000Z"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"


@dataclass
class Recorder:
    """The injected ``write``: records items, answers ``report`` (or raises ``error``)."""

    report: FeedbackReport = field(default_factory=lambda: FeedbackReport(matched=1))
    error: Exception | None = None
    items: list[FeedbackItem] = field(default_factory=list)

    async def __call__(self, item: FeedbackItem) -> FeedbackReport:
        await trio.lowlevel.checkpoint()
        self.items.append(item)
        if self.error is not None:
            raise self.error
        return self.report


@dataclass
class Confirmer:
    """The injected ``confirm_subscription``: records URLs, optionally fails."""

    error: Exception | None = None
    urls: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> None:
        await trio.lowlevel.checkpoint()
        self.urls.append(url)
        if self.error is not None:
            raise self.error


@dataclass
class Rig:
    intake: FeedbackIntake
    write: Recorder
    confirm: Confirmer
    fetcher: MemoryCertificateFetcher


@pytest.fixture
def rig(test_cert_pem: bytes) -> Rig:
    fetcher = MemoryCertificateFetcher().serve(DEFAULT_TEST_CERT_URL, test_cert_pem)
    write = Recorder()
    confirm = Confirmer()
    verifier = SnsVerifier(fetch_pem=fetcher, now=lambda: NOW, max_age=timedelta(hours=4))
    return Rig(
        intake=FeedbackIntake(verifier=verifier, write=write, confirm_subscription=confirm),
        write=write,
        confirm=confirm,
        fetcher=fetcher,
    )


def ses_document(kind: str, *, fmt: str = "notificationType", **detail: Any) -> dict[str, Any]:
    """A minimal SES event of ``kind`` in either format, for ``feedback_item`` tests."""
    document: dict[str, Any] = {
        fmt: kind,
        "mail": {
            "timestamp": "2026-01-15T10:00:00.000Z",
            "messageId": "ses-message-1",
            "destination": ["a@example.org", "b@example.org"],
        },
    }
    key = {"Rendering Failure": "failure"}.get(kind, kind[0].lower() + kind[1:])
    document[key] = {"timestamp": "2026-01-15T10:00:03.500Z", **detail}
    return document


def item_of(document: dict[str, Any], source_id: str | None = "sns-1") -> FeedbackItem:
    return feedback_item(parse_ses_event(json.dumps(document)), source_id=source_id)


# --- from fixtures to items ------------------------------------------------------------------

FIXTURES = {
    # name: (event type, suppression reason or None, recipient)
    "bounce": ("Bounce", "bounce", "jane@example.org"),
    "event_bounce": ("Bounce", "bounce", "jane@example.org"),
    "complaint": ("Complaint", "complaint", "richard@example.org"),
    "event_complaint": ("Complaint", "complaint", "richard@example.org"),
    "delivery": ("Delivery", None, "success@simulator.amazonses.com"),
    "event_delivery": ("Delivery", None, "success@simulator.amazonses.com"),
}


@pytest.mark.parametrize("name", list(FIXTURES))
async def test_each_fixture_is_verified_and_written_as_one_item(
    name: str, rig: Rig, test_signed_body: Callable[[str], bytes]
) -> None:
    body = test_signed_body(name)
    envelope = parse_envelope(body)
    event_type, reason, recipient = FIXTURES[name]

    result = await rig.intake.handle_sns(body, header_type="Notification")

    assert result.outcome is IntakeOutcome.RECORDED
    assert result.message_type == "Notification"
    assert result.event_type == event_type
    assert result.report == FeedbackReport(matched=1)
    (item,) = rig.write.items
    assert item.source_id == envelope.message_id  # the SNS MessageId: the dedup key
    (event,) = item.events
    ses_message_id = json.loads(envelope.message)["mail"]["messageId"]
    assert event.event_type == event_type
    assert event.message_id == ses_message_id
    assert event.request_id is None  # the fixtures carry no sesender tags
    assert event.detail is not None
    assert json.loads(event.detail)["recipient"] == recipient
    if reason is None:
        assert item.suppressions == ()
    else:
        (suppression,) = item.suppressions
        assert suppression.email == recipient
        assert suppression.reason == reason
        assert suppression.source == envelope.message_id
    assert item.transient_bounces == ()
    assert rig.confirm.urls == []


async def test_the_header_may_be_absent_but_never_contradict_the_body(
    rig: Rig, test_signed_body: Callable[[str], bytes]
) -> None:
    body = test_signed_body("bounce")
    with pytest.raises(SnsMalformed, match="does not match"):
        await rig.intake.handle_sns(body, header_type="SubscriptionConfirmation")
    assert rig.write.items == []
    assert rig.fetcher.calls == []  # refused before any certificate download
    # (The HTTP layer requires the header; the intake also serves SQS, which has none.)
    result = await rig.intake.handle_sns(body, header_type=None)
    assert result.outcome is IntakeOutcome.RECORDED


@pytest.mark.parametrize(
    "change",
    [
        {"Message": json.dumps({"notificationType": "Complaint"})},
        {"MessageId": "00000000-0000-0000-0000-000000000000"},
        {"Timestamp": "2026-01-15T10:00:05.124Z"},
        {"TopicArn": "arn:aws:sns:us-east-1:123456789012:other"},
        {"Signature": "AAAA"},
    ],
    ids=["message", "message-id", "timestamp", "topic", "signature"],
)
async def test_forgeries_are_refused_and_nothing_is_written(
    change: dict[str, str], rig: Rig, test_signed_body: Callable[[str], bytes]
) -> None:
    document = json.loads(test_signed_body("bounce"))
    document.update(change)
    with pytest.raises(SnsSignatureInvalid):
        await rig.intake.handle_sns(json.dumps(document).encode(), header_type="Notification")
    assert rig.write.items == []


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b'{"Type": "Notification"}', b'{"Type": "Nope"}', b"\xff"]
)
async def test_malformed_bodies_are_refused(rig: Rig, body: bytes) -> None:
    with pytest.raises(SnsMalformed):
        await rig.intake.handle_sns(body, header_type="Notification")
    assert rig.write.items == []


async def test_the_store_report_decides_the_outcome(
    rig: Rig, test_signed_body: Callable[[str], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    body = test_signed_body("delivery")
    rig.write.report = FeedbackReport(duplicates=1)
    assert (await rig.intake.handle_sns(body, header_type=None)).outcome is IntakeOutcome.DUPLICATE

    rig.write.report = FeedbackReport(matched=0)
    with caplog.at_level(logging.INFO, logger="sesender.feedback.intake"):
        result = await rig.intake.handle_sns(body, header_type=None)
    assert result.outcome is IntakeOutcome.UNKNOWN_MESSAGE
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "ses_event_unknown"]
    assert record.ses_message_id == json.loads(parse_envelope(body).message)["mail"]["messageId"]  # type: ignore[attr-defined]


async def test_a_store_failure_propagates_so_the_webhook_answers_5xx(
    rig: Rig, test_signed_body: Callable[[str], bytes]
) -> None:
    rig.write.error = StoreError("disk on fire")
    with pytest.raises(StoreError):
        await rig.intake.handle_sns(test_signed_body("complaint"), header_type="Notification")


async def test_a_verified_notification_that_is_not_an_ses_event_is_ignored(
    rig: Rig, signer: SnsMessageSigner, caplog: pytest.LogCaptureFixture
) -> None:
    for message in ("hello", json.dumps({"eventType": "Teleport", "mail": {}}), "[1]"):
        body = signer.notification(Message=message, Timestamp=NOW_TEXT)
        with caplog.at_level(logging.WARNING, logger="sesender.feedback.intake"):
            result = await rig.intake.handle_sns(body, header_type="Notification")
        assert result.outcome is IntakeOutcome.IGNORED
        assert result.event_type is None
    assert rig.write.items == []
    assert [getattr(r, "event", None) for r in caplog.records] == ["sns_ignored"] * 3


async def test_the_sqs_path_records_a_raw_ses_event_without_an_sns_id(rig: Rig) -> None:
    document = ses_document(
        "Bounce",
        bounceType="Permanent",
        bouncedRecipients=[{"emailAddress": "Gone@Example.org"}],
    )
    result = await rig.intake.handle_ses_message(json.dumps(document), source_id=None)
    assert result.outcome is IntakeOutcome.RECORDED
    (item,) = rig.write.items
    assert item.source_id is None
    (suppression,) = item.suppressions
    assert suppression.source == "ses-message-1"  # falls back to the SES message id
    assert suppression.email == "Gone@example.org"  # normalised as submissions are


# --- subscription messages -----------------------------------------------------------------------


async def test_a_subscription_confirmation_is_confirmed_once_and_writes_nothing(
    rig: Rig, signer: SnsMessageSigner, test_signed_body: Callable[[str], bytes]
) -> None:
    body = test_signed_body("subscription_confirmation")
    result = await rig.intake.handle_sns(body, header_type="SubscriptionConfirmation")
    assert result.outcome is IntakeOutcome.SUBSCRIPTION_CONFIRMED
    assert rig.confirm.urls == [parse_envelope(body).subscribe_url]
    assert rig.write.items == []


@pytest.mark.parametrize(
    "subscribe_url",
    [
        "https://evil.example.com/?Action=ConfirmSubscription&TopicArn={arn}&Token=tok",
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={arn}&Token=tok",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={arn}x&Token=tok",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={arn}&Token=tik",
        "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&TopicArn={arn}&Token=tok",
        "https://sns.us-east-1.amazonaws.com/x?Action=ConfirmSubscription&TopicArn={arn}&Token=tok",
    ],
    ids=["other-host", "http", "other-topic", "other-token", "other-action", "other-path"],
)
async def test_a_signed_confirmation_pointing_elsewhere_is_refused_unvisited(
    rig: Rig, signer: SnsMessageSigner, subscribe_url: str
) -> None:
    body = signer.subscription_confirmation(
        SubscribeURL=subscribe_url.format(arn=TOPIC_ARN), Token="tok", Timestamp=NOW_TEXT
    )
    with pytest.raises(SnsSignatureInvalid, match="SubscribeURL"):
        await rig.intake.handle_sns(body, header_type="SubscriptionConfirmation")
    assert rig.confirm.urls == []


async def test_a_failed_confirmation_propagates_so_sns_sends_it_again(
    rig: Rig, test_signed_body: Callable[[str], bytes]
) -> None:
    rig.confirm.error = SubscriptionConfirmFailed("the SubscribeURL answered 500")
    with pytest.raises(SubscriptionConfirmFailed):
        await rig.intake.handle_sns(
            test_signed_body("subscription_confirmation"), header_type="SubscriptionConfirmation"
        )
    assert len(rig.confirm.urls) == 1


async def test_an_unsubscribe_confirmation_alerts_and_is_never_followed(
    rig: Rig, signer: SnsMessageSigner, caplog: pytest.LogCaptureFixture
) -> None:
    document = json.loads(signer.subscription_confirmation(Token="tok", Timestamp=NOW_TEXT))
    document["Type"] = "UnsubscribeConfirmation"
    body = json.dumps(signer.sign(document)).encode()
    with caplog.at_level(logging.ERROR, logger="sesender.feedback.intake"):
        result = await rig.intake.handle_sns(body, header_type="UnsubscribeConfirmation")
    assert result.outcome is IntakeOutcome.UNSUBSCRIBED
    assert rig.confirm.urls == []
    assert rig.write.items == []
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.event == "sns_unsubscribed"  # type: ignore[attr-defined]
    assert record.topic_arn == TOPIC_ARN  # type: ignore[attr-defined]


# --- feedback_item: what each SES event means for the store --------------------------------------


def test_a_permanent_bounce_suppresses_every_bounced_recipient_and_no_other() -> None:
    item = item_of(
        ses_document(
            "Bounce",
            bounceType="Permanent",
            bounceSubType="NoEmail",
            bouncedRecipients=[
                {"emailAddress": "a@example.org", "status": "5.1.1", "diagnosticCode": "550"},
                {"emailAddress": "c@example.org"},
            ],
        )
    )
    assert [json.loads(e.detail or "{}")["recipient"] for e in item.events] == [
        "a@example.org",
        "c@example.org",
    ]
    assert json.loads(item.events[0].detail or "{}") == {
        "recipient": "a@example.org",
        "bounce_type": "Permanent",
        "sub_type": "NoEmail",
        "status": "5.1.1",
        "diagnostic": "550",
    }
    assert all(e.occurred_at_ms == 1_768_471_203_500 for e in item.events)  # bounce.timestamp
    assert [(s.email, s.reason, s.source) for s in item.suppressions] == [
        ("a@example.org", "bounce", "sns-1"),
        ("c@example.org", "bounce", "sns-1"),
    ]
    assert item.transient_bounces == ()  # b@example.org (only in mail.destination) is untouched


def test_transient_bounces_are_counted_not_suppressed() -> None:
    item = item_of(
        ses_document(
            "Bounce",
            bounceType="Transient",
            bounceSubType="MailboxFull",
            bouncedRecipients=[{"emailAddress": "full@example.org"}],
        )
    )
    assert item.suppressions == ()
    assert item.transient_bounces == ("full@example.org",)
    assert [e.event_type for e in item.events] == ["Bounce"]


def test_undetermined_bounces_neither_suppress_nor_count() -> None:
    item = item_of(
        ses_document(
            "Bounce",
            bounceType="Undetermined",
            bouncedRecipients=[{"emailAddress": "who@example.org"}],
        )
    )
    assert item.suppressions == ()
    assert item.transient_bounces == ()
    assert len(item.events) == 1


@pytest.mark.parametrize(
    ("feedback_type", "suppresses"),
    [("abuse", True), (None, True), ("fraud", True), ("not-spam", False)],
)
def test_complaints_suppress_unless_the_report_says_not_spam(
    feedback_type: str | None, suppresses: bool
) -> None:
    detail: dict[str, Any] = {"complainedRecipients": [{"emailAddress": "x@example.org"}]}
    if feedback_type is not None:
        detail["complaintFeedbackType"] = feedback_type
    item = item_of(ses_document("Complaint", fmt="eventType", **detail))
    assert [s.reason for s in item.suppressions] == (["complaint"] if suppresses else [])
    assert [e.event_type for e in item.events] == ["Complaint"]


def test_deliveries_and_delays_never_suppress() -> None:
    delivery = item_of(ses_document("Delivery", recipients=["a@example.org"]))
    delay = item_of(
        ses_document(
            "DeliveryDelay",
            fmt="eventType",
            delayType="MailboxFull",
            delayedRecipients=[{"emailAddress": "a@example.org", "status": "4.2.2"}],
        )
    )
    assert delivery.suppressions == delay.suppressions == ()
    assert delivery.transient_bounces == delay.transient_bounces == ()
    assert [e.event_type for e in (*delivery.events, *delay.events)] == [
        "Delivery",
        "DeliveryDelay",
    ]


def test_an_unsubscribe_all_subscription_event_suppresses_as_unsubscribe() -> None:
    everything = item_of(
        ses_document(
            "Subscription",
            fmt="eventType",
            contactList="list",
            newTopicPreferences={"unsubscribeAll": True},
        )
    )
    one_topic = item_of(
        ses_document(
            "Subscription",
            fmt="eventType",
            contactList="list",
            newTopicPreferences={"unsubscribeAll": False},
        )
    )
    assert {(s.email, s.reason) for s in everything.suppressions} == {
        ("a@example.org", "unsubscribe"),
        ("b@example.org", "unsubscribe"),
    }
    assert one_topic.suppressions == ()


def test_sesender_tags_carry_the_request_id_to_every_event() -> None:
    document = ses_document("Delivery", fmt="eventType", recipients=["a@example.org"])
    document["mail"]["tags"] = {"sesender_request_id": ["42"], "sesender_topic": ["news"]}
    (event,) = item_of(document).events
    assert event.request_id == 42
    assert event.message_id == "ses-message-1"


def test_an_event_without_recipients_still_counts_once_for_its_email() -> None:
    item = item_of(ses_document("Delivery", recipients=[]))
    (event,) = item.events
    assert event.event_type == "Delivery"
    assert event.detail is None
    assert event.message_id == "ses-message-1"


# --- behind the real group commit ----------------------------------------------------------------


async def _sent_email(store: Any, ses_message_id: str) -> None:
    now = 1_768_471_200_000
    message = NewMessage(topic_id="t", subject="s", body="b", emails=("known@example.org",))
    await store.submit(Submission(messages=(message,), due_at_ms=now, created_at_ms=now))
    (email,) = (await store.claim_due(now_ms=now, limit=1)).emails
    await store.record_outcomes(
        [Sent(email.request_id, ses_message_id, attempts=1, sent_at_ms=now)], now_ms=now
    )


async def test_each_message_sharing_a_group_commit_is_told_its_own_outcome(
    tmp_path: Path, test_cert_pem: bytes, signer: SnsMessageSigner
) -> None:
    """Concurrent webhooks share one commit; each must learn what happened to *its* message.

    Three messages land in one ResultWriter batch: a replay of an already recorded message, a
    new event for a known email, and an event for an unknown SES message id. The replay is a
    duplicate, the new one is recorded, the unknown one is unknown (and logged as such).
    """
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)

    def verifier() -> SnsVerifier:
        return SnsVerifier(fetch_pem=fetcher, now=lambda: NOW, max_age=timedelta(hours=4))

    def body(kind: str, ses_message_id: str, message_id: str) -> bytes:
        event = ses_document(kind, recipients=["known@example.org"])
        event["mail"]["messageId"] = ses_message_id
        return signer.notification(
            Message=json.dumps(event), MessageId=message_id, Timestamp=NOW_TEXT
        )

    first = body("Delivery", "ses-known", "sns-first")
    fresh = body("Delivery", "ses-known", "sns-fresh")
    unknown = body("Delivery", "ses-unknown", "sns-unknown")

    async with open_sqlite_store(tmp_path / "feedback.db") as store:
        await _sent_email(store, "ses-known")

        async def run(messages: dict[str, bytes]) -> dict[str, IntakeOutcome]:
            """Queue every message before the writer starts, so they share one commit."""
            write_tx, write_rx = open_pipe[ResultWrite]("results", 16)
            intake = FeedbackIntake(
                verifier=verifier(),
                write=functools.partial(write_and_wait, write_tx),
                confirm_subscription=Confirmer(),
            )
            writer = ResultWriter(store=store, write_rx=write_rx, now_ms=lambda: 0)
            outcomes: dict[str, IntakeOutcome] = {}

            async def handle(name: str, message: bytes) -> None:
                outcomes[name] = (await intake.handle_sns(message, header_type=None)).outcome

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    async with trio.open_nursery() as handlers:
                        for name, message in messages.items():
                            handlers.start_soon(handle, name, message)
                        await trio.testing.wait_all_tasks_blocked()
                        nursery.start_soon(writer.run)
                    nursery.cancel_scope.cancel()
            return outcomes

        assert await run({"first": first}) == {"first": IntakeOutcome.RECORDED}
        outcomes = await run({"replay": first, "fresh": fresh, "unknown": unknown})

        detail = await store.request_detail(1)
        assert detail is not None
        assert [(e.event_type, e.count) for e in detail.events] == [("Delivery", 2)]
    assert outcomes == {
        "replay": IntakeOutcome.DUPLICATE,
        "fresh": IntakeOutcome.RECORDED,
        "unknown": IntakeOutcome.UNKNOWN_MESSAGE,
    }


def test_a_recipient_that_is_not_an_address_is_recorded_but_never_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A signed event can carry anything; found by tests/e2e/test_signed_hostile_events.py."""
    event = parse_ses_event(
        json.dumps(
            {
                "eventType": "Bounce",
                "mail": {"timestamp": "2026-01-01T00:00:00Z", "messageId": "m-1"},
                "bounce": {
                    "bounceType": "Permanent",
                    "timestamp": "2026-01-01T00:00:00Z",
                    "bouncedRecipients": [
                        {"emailAddress": '" OR 1=1 --'},
                        {"emailAddress": "ok@Example.ORG"},
                    ],
                },
            }
        )
    )
    item = feedback_item(event, source_id="sns-1")
    assert len(item.events) == 2  # both recorded as events (detail kept for the record)
    assert [s.email for s in item.suppressions] == ["ok@example.org"]
    assert any(getattr(r, "event", None) == "ses_event_invalid_recipient" for r in caplog.records)


# --- SES click events (click tracking) ----------------------------------------------------------


def test_an_ses_click_is_a_click_on_its_link_with_the_user_agent() -> None:
    document = ses_document(
        "Click",
        fmt="eventType",
        link="https://shop.example/sale?a=1#top",
        userAgent="Mozilla/5.0",
        ipAddress="192.0.2.1",
        linkTags={},
    )
    document["mail"]["tags"] = {"sesender_request_id": ["42"]}
    item = item_of(document)
    assert item.events == ()
    (click,) = item.clicks
    assert click == ClickEvent(
        occurred_at_ms=1_768_471_203_500,
        request_id=42,
        message_id="ses-message-1",
        url="https://shop.example/sale?a=1#top",
        user_agent="Mozilla/5.0",
        source="ses",
    )
    assert item.source_id == "sns-1"


async def test_an_ses_click_on_a_link_sesender_tracks_is_not_counted_twice(
    test_cert_pem: bytes,
) -> None:
    fetcher = MemoryCertificateFetcher().serve(DEFAULT_TEST_CERT_URL, test_cert_pem)
    write = Recorder()
    intake = FeedbackIntake(
        verifier=SnsVerifier(fetch_pem=fetcher, now=lambda: NOW, max_age=timedelta(hours=4)),
        write=write,
        confirm_subscription=Confirmer(),
        own_click_prefix="https://sesender.example/v1/events/click/",
    )
    own = ses_document(
        "Click", fmt="eventType", link="https://sesender.example/v1/events/click/tok/code"
    )
    result = await intake.handle_ses_message(json.dumps(own), source_id="sns-1")
    assert result.outcome is IntakeOutcome.IGNORED
    assert write.items == []  # sesender's redirect records that click
    foreign = ses_document("Click", fmt="eventType", link="https://elsewhere.example/")
    result = await intake.handle_ses_message(json.dumps(foreign), source_id="sns-2")
    assert result.outcome is IntakeOutcome.RECORDED
    (item,) = write.items
    assert [click.url for click in item.clicks] == ["https://elsewhere.example/"]
