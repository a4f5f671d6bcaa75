"""Hostile values inside validly signed SNS messages, end to end.

``test_hostile_input.py`` sweeps what an attacker can send without the signing key: every such
message stops at 400/403 before its content is read. This module covers the other side: SES
itself (or a compromised topic that passes the allow-list) delivering events whose fields hold
SQL metacharacters, NUL, CR/LF, very long strings, lone surrogates and odd unicode. They are
signed with the test key, so they pass verification and reach the SES event parser and
the store. What must hold: never a 5xx, never an error in the log, never a suppression stored
for something that is not a valid address, and an event that names no email of ours changes no
email of ours.

Defect this module found (fixed in ``sesender/feedback/intake.py``): a signed permanent bounce
naming ``" OR 1=1 --`` as its recipient stored that string as a suppressed address. Recipients are
now normalised as submissions are, and one that is not a valid address is recorded with the event
but never suppressed (logged as ``ses_event_invalid_recipient``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sesender.addresses import check_address
from tests.e2e.harness import ServiceProcess, submit, wait_topic
from tests.e2e.sns_support import (
    LOOPBACK_PATTERN,
    LoopbackServer,
    SesKind,
    SnsMinter,
    post_sns,
    running_service,
    ses_event,
)

pytestmark = pytest.mark.e2e

HOSTILE = {
    "sql-quote": "x'); DROP TABLE requests;--",
    "sql-or": '" OR 1=1 --',
    "wildcards": "%_%",
    "nul": "a\x00b@example.org",
    "crlf": "a@example.org\r\nBcc: victim@example.org",
    "long": "x" * 100_000,
    "surrogate": "\ud800",
    "rtl-emoji": "\u202eevil\U0001f600@example.org",
    "empty": "",
}
FIELDS = ("message_id", "recipient", "bounce_type", "tag", "timestamp")
KINDS: tuple[SesKind, ...] = ("bounce", "complaint", "delivery")


@pytest.fixture(scope="module")
def service(
    cert_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("signed-hostile"),
        SENDER_BACKEND="memory",
        SNS_CERT_URL_PATTERN=LOOPBACK_PATTERN,
        MAX_SEND_PER_SECOND="100",
    ) as started:
        yield started


@pytest.fixture(scope="module")
def canary(service: ServiceProcess) -> dict[str, Any]:
    """One sent email whose SES message id the hostile events borrow."""
    with service.client() as client:
        (request_id,) = submit(client, topic="signed-hostile", emails=["canary@example.org"])
        wait_topic(client, "signed-hostile", count=1, timeout=30)
        detail: dict[str, Any] = client.get(f"/v1/messages/{request_id}").json()
    assert detail["message_id"]
    return detail


def hostile_event(kind: SesKind, field: str, value: str, canary: dict[str, Any]) -> tuple[str, Any]:
    """The fixture event of ``kind`` about the canary, with ``field`` replaced by ``value``."""
    message, subject = ses_event(
        kind,
        "event",
        ses_message_id=canary["message_id"],
        recipient=canary["email"],
        bounce_type="Permanent" if kind == "bounce" else None,
    )
    event: dict[str, Any] = json.loads(message)
    detail = event[kind]
    match field:
        case "message_id":
            event["mail"]["messageId"] = value
            event["mail"]["tags"] = {}  # no request-id tag to fall back on either
        case "recipient":
            event["mail"]["destination"] = [value]
            for key in ("bouncedRecipients", "complainedRecipients"):
                for item in detail.get(key, []):
                    item["emailAddress"] = value
            if "recipients" in detail:
                detail["recipients"] = [value]
        case "bounce_type":
            detail["bounceType"] = value
            detail["bounceSubType"] = value
        case "tag":
            event["mail"]["tags"] = {"sesender_request_id": [value], "sesender_topic": [value]}
        case "timestamp":
            event["mail"]["timestamp"] = value
            detail["timestamp"] = value
    return json.dumps(event), subject


#: Every field of every kind (only bounces have a bounce type).
CASES = [
    (kind, field)
    for kind in KINDS
    for field in FIELDS
    if kind == "bounce" or field != "bounce_type"
]


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(("kind", "field"), CASES)
def test_a_signed_event_with_a_hostile_field(
    service: ServiceProcess,
    minter: SnsMinter,
    canary: dict[str, Any],
    kind: SesKind,
    field: str,
    name: str,
) -> None:
    message, subject = hostile_event(kind, field, HOSTILE[name], canary)
    body = minter.notification(message, subject=subject)
    with httpx.Client(base_url=service.url, timeout=30) as sns:
        response = post_sns(sns, body)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    if field == "message_id" and name != "empty":
        # Names no email of ours: nothing of ours may change.
        assert response.status_code != 200 or response.json()["result"] != "recorded", response.text


def test_afterwards_only_valid_addresses_are_suppressed_and_nothing_was_logged_as_an_error(
    service: ServiceProcess, canary: dict[str, Any]
) -> None:
    with service.client() as client:
        response = client.get("/v1/suppressions", params={"limit": 1000})
        assert response.status_code == 200, response.text
        entries = response.json()["suppressions"]
        detail = client.get(f"/v1/messages/{canary['request_id']}").json()
    for entry in entries:
        checked = check_address(entry["email"])
        assert checked.normalized == entry["email"], entry
    assert detail["status"] == "Sent"
    errors = [line for line in service.lines if line.get("level") in ("error", "critical")]
    assert errors == []
    assert not any("Traceback" in line for line in service.raw_lines)
