"""Event bodies and their signatures: the body per type, the same bytes on every retry, and the
Standard Webhooks headers verified by the ``standardwebhooks`` package (one signature per secret
in effect: two during a rotation)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sesender.webhooks.events import event_body
from sesender.webhooks.models import PendingEvent
from sesender.webhooks.signing import Signer, new_secret

BASE = PendingEvent(
    row_id=1,
    event_id="evt_abc",
    endpoint_id="ep_1",
    event_type="email.bounced",
    request_id=42,
    topic_id="news",
    email="a@example.com",
    message_id="ses-42",
    suppressed=True,
    detail=json.dumps(
        {
            "recipient": "a@example.com",
            "bounce_type": "Permanent",
            "sub_type": "General",
            "diagnostic": "550 user unknown",
        }
    ),
    occurred_at_ms=1_768_471_200_123,
    attempts=0,
)


def body(event: PendingEvent) -> dict[str, object]:
    document: dict[str, object] = json.loads(event_body(event))
    return document


def test_a_bounce_says_its_type_and_that_it_suppressed() -> None:
    document = body(BASE)
    assert document["id"] == "evt_abc"
    assert document["type"] == "email.bounced"
    assert document["timestamp"] == "2026-01-15T10:00:00.123Z"
    assert document["data"] == {
        "request_id": 42,
        "topic_id": "news",
        "email": "a@example.com",
        "message_id": "ses-42",
        "bounce_type": "Permanent",
        "bounce_sub_type": "General",
        "diagnostic": "550 user unknown",
        "suppressed": True,
        "details": json.loads(str(BASE.detail)),
    }
    assert event_body(BASE) == event_body(replace(BASE, attempts=3))  # the same on every retry


@pytest.mark.parametrize(
    ("event_type", "detail", "expected"),
    [
        ("email.sent", None, {}),
        (
            "email.failed",
            json.dumps({"error": "rejected", "failure_kind": "permanent"}),
            {"error": "rejected", "failure_kind": "permanent"},
        ),
        (
            "email.clicked",
            json.dumps({"link": "https://x.example/a"}),
            {"link": "https://x.example/a"},
        ),
        (
            "email.complained",
            json.dumps({"feedback_type": "abuse"}),
            {"feedback_type": "abuse", "suppressed": True},
        ),
        ("email.unsubscribed", None, {"suppressed": True}),
    ],
)
def test_the_data_of_each_email_type(
    event_type: str, detail: str | None, expected: dict[str, object]
) -> None:
    data = body(replace(BASE, event_type=event_type, detail=detail))["data"]
    assert isinstance(data, dict)
    common = {
        "request_id": 42,
        "topic_id": "news",
        "email": "a@example.com",
        "message_id": "ses-42",
    }
    assert {k: v for k, v in data.items() if k != "details"} == {**common, **expected}


def test_topic_completed_names_only_the_topic() -> None:
    completed = replace(
        BASE, event_type="topic.completed", request_id=None, email=None, detail=None
    )
    assert body(completed)["data"] == {"topic_id": "news"}


def test_signatures_verify_with_standardwebhooks_and_rotation_signs_twice() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_")
    assert old != new
    payload = event_body(BASE)
    now = int(time.time())
    headers = Signer().headers((new, old), "evt_abc", now, payload)
    assert headers["webhook-id"] == "evt_abc"
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver on either secret accepts it
        assert Webhook(secret).verify(payload, headers)["id"] == "evt_abc"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(payload.replace(b"Permanent", b"Transient"), headers)
