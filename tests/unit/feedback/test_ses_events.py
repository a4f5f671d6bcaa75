"""Parsing SES events in both formats: identity notifications and configuration-set events."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.errors import SnsMalformed
from sesender.feedback import RecipientEvent, SesEvent, parse_envelope, parse_ses_event

MAIL: dict[str, Any] = {
    "timestamp": "2026-01-15T10:00:00.000Z",
    "messageId": "0100018d0f6b7c2a-1b2c3d4e-5f60-4a1b-9c8d-7e6f5a4b3c2d-000000",
    "source": "noreply@example.com",
    "destination": ["a@example.org", "b@example.org"],
    "tags": {
        "ses:configuration-set": ["transactional"],
        "sesender_request_id": ["42"],
        "sesender_topic": ["newsletter_2024_01"],
    },
}


def event(event_type: str, detail_key: str | None, detail: object, **mail: object) -> str:
    document: dict[str, Any] = {"eventType": event_type, "mail": {**copy.deepcopy(MAIL), **mail}}
    if detail_key is not None:
        document[detail_key] = detail
    return json.dumps(document)


def message_of(test_signed_body: Callable[[str], bytes], name: str) -> str:
    return parse_envelope(test_signed_body(name)).message


# --- The SNS fixtures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bounce", "event_bounce"])
def test_permanent_bounce_fixture(name: str, test_signed_body: Callable[[str], bytes]) -> None:
    parsed = parse_ses_event(message_of(test_signed_body, name))

    assert parsed.event_type == "Bounce"
    assert parsed.ses_message_id == "0100018d0f6b7c2a-1b2c3d4e-5f60-4a1b-9c8d-7e6f5a4b3c2d-000000"
    assert parsed.occurred_at == datetime(2026, 1, 15, 10, 0, 3, tzinfo=UTC)
    assert parsed.feedback_id == "0100018d0f6b8e11-aaaa1111-bbbb-cccc-dddd-eeeeffff0000-000000"
    assert parsed.recipients == (
        RecipientEvent(
            email="jane@example.org",
            suppresses=True,
            bounce_type="Permanent",
            sub_type="General",
            status="5.1.1",
            diagnostic="smtp; 550 5.1.1 <jane@example.org>: user unknown",
        ),
    )


@pytest.mark.parametrize("name", ["complaint", "event_complaint"])
def test_complaint_fixture(name: str, test_signed_body: Callable[[str], bytes]) -> None:
    parsed = parse_ses_event(message_of(test_signed_body, name))

    assert parsed.event_type == "Complaint"
    assert parsed.occurred_at == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    assert parsed.recipients == (
        RecipientEvent(email="richard@example.org", suppresses=True, feedback_type="abuse"),
    )


@pytest.mark.parametrize("name", ["delivery", "event_delivery"])
def test_delivery_fixture(name: str, test_signed_body: Callable[[str], bytes]) -> None:
    parsed = parse_ses_event(message_of(test_signed_body, name))

    assert parsed.event_type == "Delivery"
    assert parsed.occurred_at == datetime(2026, 1, 15, 10, 0, 1, 184000, tzinfo=UTC)
    assert parsed.recipients == (RecipientEvent(email="success@simulator.amazonses.com"),)
    assert parsed.feedback_id is None


def test_identity_notifications_carry_no_tags(test_signed_body: Callable[[str], bytes]) -> None:
    parsed = parse_ses_event(message_of(test_signed_body, "bounce"))
    assert dict(parsed.tags) == {}
    assert (parsed.request_id_tag, parsed.topic_tag) == (None, None)


def test_event_publishing_tags(test_signed_body: Callable[[str], bytes]) -> None:
    parsed = parse_ses_event(message_of(test_signed_body, "event_delivery"))
    assert dict(parsed.tags) == {
        "ses:configuration-set": ("transactional",),
        "ses:from-domain": ("example.com",),
        "ses:caller-identity": ("mailer-service",),
        "campaign": ("welcome-2026",),
    }
    assert parsed.request_id_tag is None


# --- Every event type --------------------------------------------------------------------------

DESTINATION = ("a@example.org", "b@example.org")


@pytest.mark.parametrize(
    ("event_type", "detail_key", "detail", "normalised"),
    [
        ("Send", "send", {}, "Send"),
        ("Reject", "reject", {"reason": "Bad content"}, "Reject"),
        (
            "Open",
            "open",
            {"ipAddress": "192.0.2.1", "timestamp": "2026-01-15T11:00:00Z", "userAgent": "x"},
            "Open",
        ),
        (
            "Click",
            "click",
            {"timestamp": "2026-01-15T11:00:00Z", "link": "https://example.com", "linkTags": {}},
            "Click",
        ),
        (
            "Rendering Failure",
            "failure",
            {"templateName": "t", "errorMessage": "missing var"},
            "RenderingFailure",
        ),
        (
            "Subscription",
            "subscription",
            {
                "contactList": "news",
                "timestamp": "2026-01-15T11:00:00Z",
                "newTopicPreferences": {"unsubscribeAll": False},
            },
            "Subscription",
        ),
    ],
)
def test_types_without_recipient_lists_use_mail_destination(
    event_type: str, detail_key: str, detail: dict[str, object], normalised: str
) -> None:
    parsed = parse_ses_event(event(event_type, detail_key, detail))

    assert parsed.event_type == normalised
    assert parsed.recipients == tuple(RecipientEvent(email=email) for email in DESTINATION)
    assert parsed.request_id_tag == 42
    assert parsed.topic_tag == "newsletter_2024_01"
    expected_time = detail.get("timestamp", MAIL["timestamp"])
    assert parsed.occurred_at == datetime.fromisoformat(str(expected_time))


def test_send_reject_and_rendering_failure_tolerate_a_missing_detail_object() -> None:
    for event_type in ("Send", "Reject", "Rendering Failure"):
        assert parse_ses_event(event(event_type, None, None)).recipients[0].email == DESTINATION[0]


def test_delivery_uses_its_own_recipients_not_the_destination() -> None:
    parsed = parse_ses_event(
        event(
            "Delivery",
            "delivery",
            {"timestamp": MAIL["timestamp"], "recipients": ["b@example.org"]},
        )
    )
    assert parsed.recipients == (RecipientEvent(email="b@example.org"),)


def test_bounce_uses_bounced_recipients_not_the_destination() -> None:
    parsed = parse_ses_event(
        event(
            "Bounce",
            "bounce",
            {
                "bounceType": "Transient",
                "bounceSubType": "MailboxFull",
                "bouncedRecipients": [{"emailAddress": "b@example.org"}],
                "timestamp": "2026-01-15T10:01:00Z",
            },
        )
    )
    assert parsed.recipients == (
        RecipientEvent(
            email="b@example.org", suppresses=False, bounce_type="Transient", sub_type="MailboxFull"
        ),
    )


@pytest.mark.parametrize(
    ("bounce_type", "suppresses"),
    [("Permanent", True), ("Transient", False), ("Undetermined", False), ("Future", False)],
)
def test_only_permanent_bounces_suppress(bounce_type: str, suppresses: bool) -> None:
    parsed = parse_ses_event(
        event(
            "Bounce",
            "bounce",
            {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "a@example.org"}, {"emailAddress": "c@x"}],
                "timestamp": "2026-01-15T10:01:00Z",
            },
        )
    )
    assert [recipient.suppresses for recipient in parsed.recipients] == [suppresses] * 2
    assert [recipient.email for recipient in parsed.recipients] == ["a@example.org", "c@x"]


@pytest.mark.parametrize(
    ("feedback_type", "suppresses"),
    [(None, True), ("abuse", True), ("fraud", True), ("other", True), ("not-spam", False)],
)
def test_complaints_suppress_unless_not_spam(feedback_type: str | None, suppresses: bool) -> None:
    detail: dict[str, object] = {
        "complainedRecipients": [{"emailAddress": "a@example.org"}],
        "timestamp": "2026-01-15T10:01:00Z",
        "feedbackId": "f",
        "complaintSubType": None,
    }
    if feedback_type is not None:
        detail["complaintFeedbackType"] = feedback_type
    parsed = parse_ses_event(event("Complaint", "complaint", detail))
    assert parsed.recipients[0].suppresses is suppresses
    assert parsed.recipients[0].feedback_type == feedback_type
    assert parsed.feedback_id == "f"


def test_delivery_delay_uses_delayed_recipients() -> None:
    parsed = parse_ses_event(
        event(
            "DeliveryDelay",
            "deliveryDelay",
            {
                "delayType": "MailboxFull",
                "delayedRecipients": [
                    {"emailAddress": "b@example.org", "status": "4.2.2", "diagnosticCode": "full"}
                ],
                "expirationTime": "2026-01-16T10:00:00Z",
                "timestamp": "2026-01-15T10:30:00Z",
            },
        )
    )
    assert parsed.event_type == "DeliveryDelay"
    assert parsed.occurred_at == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    assert parsed.recipients == (
        RecipientEvent(
            email="b@example.org", sub_type="MailboxFull", status="4.2.2", diagnostic="full"
        ),
    )


def test_subscription_event_unsubscribing_from_everything_suppresses() -> None:
    parsed = parse_ses_event(
        event(
            "Subscription",
            "subscription",
            {
                "contactList": "news",
                "timestamp": "2026-01-15T11:00:00Z",
                "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
                "oldTopicPreferences": {"unsubscribeAll": False},
            },
        )
    )
    assert all(recipient.suppresses for recipient in parsed.recipients)


def test_unknown_fields_are_ignored() -> None:
    document = json.loads(
        event("Open", "open", {"timestamp": "2026-01-15T11:00:00Z", "brandNewField": [1, 2]})
    )
    document["somethingNew"] = {"x": 1}
    document["mail"]["alsoNew"] = True
    assert parse_ses_event(json.dumps(document)).event_type == "Open"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1"], 1),
        (["9223372036854775807"], 2**63 - 1),
        (["9223372036854775808"], None),
        (["0"], None),
        (["-1"], None),
        (["007"], None),
        (["42", "43"], None),
        ([], None),
        (["abc"], None),
        (["\u0664\u0662"], None),  # Arabic-Indic digits: int() would accept them
        (["4 2"], None),
    ],
)
def test_request_id_tag(values: list[str], expected: int | None) -> None:
    tags = {"sesender_request_id": values}
    parsed = parse_ses_event(event("Send", "send", {}, tags=tags))
    assert parsed.request_id_tag == expected
    assert parsed.tags["sesender_request_id"] == tuple(values)


def test_sesevent_is_frozen_and_hashable() -> None:
    parsed = parse_ses_event(event("Send", "send", {}))
    assert isinstance(parsed, SesEvent)
    assert hash(parsed) == hash(parse_ses_event(event("Send", "send", {})))
    with pytest.raises(AttributeError):
        parsed.event_type = "Open"  # type: ignore[misc]


# --- Malformed ---------------------------------------------------------------------------------


def _bounce(**changes: object) -> str:
    detail: dict[str, object] = {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [{"emailAddress": "a@example.org"}],
        "timestamp": "2026-01-15T10:01:00Z",
    }
    detail.update(changes)
    return json.dumps({"notificationType": "Bounce", "bounce": detail, "mail": MAIL})


MALFORMED = {
    "not json": "hello",
    "array": "[]",
    "nested too deep": "[" * 50_000,
    "no type": json.dumps({"mail": MAIL}),
    "both types": json.dumps({"notificationType": "Bounce", "eventType": "Bounce", "mail": MAIL}),
    "unknown notificationType": json.dumps({"notificationType": "Open", "mail": MAIL}),
    "moto's template type": json.dumps(
        {"notificationType": "Bounce, Complaint, or Delivery.", "mail": MAIL}
    ),
    "subscription succeeded notice": json.dumps(
        {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}
    ),
    "unknown eventType": json.dumps({"eventType": "Teleport", "mail": MAIL}),
    "eventType not a string": json.dumps({"eventType": 3, "mail": MAIL}),
    "no mail": json.dumps({"eventType": "Send", "send": {}}),
    "mail not an object": json.dumps({"eventType": "Send", "send": {}, "mail": []}),
    "no messageId": event("Send", "send", {}, messageId=None),
    "empty messageId": event("Send", "send", {}, messageId=""),
    "no timestamp anywhere": event("Send", "send", {}, timestamp=None),
    "bad timestamp": event("Open", "open", {"timestamp": "soon"}),
    "no destination": event("Send", "send", {}, destination=None),
    "destination not a list": event("Send", "send", {}, destination="a@example.org"),
    "destination with a number": event("Send", "send", {}, destination=[1]),
    "tags not an object": event("Send", "send", {}, tags=["a"]),
    "tag value not a list": event("Send", "send", {}, tags={"a": "b"}),
    "tag value with a number": event("Send", "send", {}, tags={"a": [1]}),
    "bounce object missing": json.dumps({"notificationType": "Bounce", "mail": MAIL}),
    "no bouncedRecipients": _bounce(bouncedRecipients=None),
    "bouncedRecipients not a list": _bounce(bouncedRecipients={"emailAddress": "a@x"}),
    "recipient without address": _bounce(bouncedRecipients=[{"status": "5.1.1"}]),
    "recipient address not a string": _bounce(bouncedRecipients=[{"emailAddress": 5}]),
    "no bounceType": _bounce(bounceType=None),
    "diagnostic not a string": _bounce(
        bouncedRecipients=[{"emailAddress": "a@x", "diagnosticCode": 5}]
    ),
    "complaint without recipients": json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {"timestamp": "2026-01-15T10:00:00Z"},
            "mail": MAIL,
        }
    ),
    "delivery recipients not strings": event(
        "Delivery", "delivery", {"timestamp": "2026-01-15T10:00:00Z", "recipients": [{}]}
    ),
    "open without its object": event("Open", None, None),
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_events_are_refused(message: str) -> None:
    with pytest.raises(SnsMalformed):
        parse_ses_event(message)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
SES_KEYS = st.sampled_from(
    [
        "eventType",
        "notificationType",
        "mail",
        "messageId",
        "timestamp",
        "destination",
        "tags",
        "bounce",
        "bounceType",
        "bouncedRecipients",
        "emailAddress",
        "complaint",
        "complainedRecipients",
        "delivery",
        "recipients",
        "deliveryDelay",
        "delayedRecipients",
        "Bounce",
        "Delivery",
        "Send",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    document=st.dictionaries(SES_KEYS, JSON_VALUES | SES_KEYS, max_size=6) | JSON_VALUES,
    text=st.text(max_size=200),
)
def test_fuzz_only_ever_raises_malformed(document: object, text: str) -> None:
    for message in (json.dumps(document), text):
        try:
            parsed = parse_ses_event(message)
        except SnsMalformed:
            continue
        assert parsed.ses_message_id
        assert all(recipient.email for recipient in parsed.recipients)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["Bounce", "Complaint", "Delivery"]),
    path=st.lists(
        st.sampled_from(["mail", "bounce", "complaint", "delivery", "0", "tags"]), max_size=3
    ),
    value=JSON_VALUES,
)
def test_fuzz_mutated_real_events(
    name: str, path: list[str], value: object, test_signed_body: Callable[[str], bytes]
) -> None:
    document: Any = json.loads(message_of(test_signed_body, name.lower()))
    target = document
    for step in path[:-1]:
        child = target.get(step) if isinstance(target, dict) else None
        if not isinstance(child, dict):
            break
        target = child
    if path and isinstance(target, dict):
        target[path[-1]] = value
    with contextlib.suppress(SnsMalformed):
        parse_ses_event(json.dumps(document))
