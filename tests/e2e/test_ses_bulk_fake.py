"""End to end: the service (a process, ``SENDER_BACKEND=ses``) against ``bench.fake_ses``.

The fake answers ``SendEmail`` and ``SendBulkEmail`` on 127.0.0.1, refuses addresses starting
with ``rejected`` (``MESSAGE_REJECTED`` per bulk entry, ``MessageRejected`` for ``SendEmail``)
and keeps every message as SES would render it, read back over HTTP (``/_bench/messages``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from actors import ThreadLane
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.errors import PermanentSendError, TransientSendError
from sesender.feedback.ses_events import REQUEST_ID_TAG, TOPIC_TAG
from sesender.pipeline.pixel import insert_pixel
from sesender.tracking import TokenSigner
from tests.e2e.fake_ses_support import SENDER, FakeSes, running_fake_ses
from tests.e2e.harness import ServiceProcess, message_details, submit, wait_for, wait_topic

pytestmark = pytest.mark.e2e

PUBLIC_URL = "http://tracking.example.test"
TRACKING_SECRET = "e2e-ses-bulk-tracking-secret"
PIXEL = re.compile(r'<img src="([^"]+)"')


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    """The fake, refusing every address that starts with ``rejected``."""
    with running_fake_ses("--reject", "rejected") as fake:
        yield fake


def start(start_service: Callable[..., ServiceProcess], fake: FakeSes, mode: str) -> ServiceProcess:
    return start_service(
        API_KEY="e2e-ses-bulk-key",
        SENDER_BACKEND="ses",
        SES_SEND_MODE=mode,
        AWS_ENDPOINT_URL_SESV2=fake.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_SES_FROM_EMAIL=SENDER,
        MAX_SEND_PER_SECOND="500",
        SERVER_URL=PUBLIC_URL,
        TRACKING_SECRET=TRACKING_SECRET,
    )


@pytest.mark.parametrize("mode", ["bulk", "single"])
def test_rejected_addresses_fail_the_others_are_sent_and_their_pixels_count(
    start_service: Callable[..., ServiceProcess], fake_ses: FakeSes, mode: str
) -> None:
    service = start(start_service, fake_ses, mode)
    recipients = [
        f"rejected{n}@example.org" if n % 8 == 3 else f"user{n}@example.org" for n in range(120)
    ]
    rejected = {r for r in recipients if r.startswith("rejected")}
    with service.client() as client:
        ids = submit(
            client,
            topic="bulk",
            emails=recipients,
            subject="Bulk newsletter",
            content="<html><body><h1>Hello</h1><p>from sesender</p></body></html>",
        )
        wait_topic(client, "bulk", count=len(rejected), status="Failed", timeout=60)
        wait_topic(client, "bulk", count=len(recipients) - len(rejected), timeout=60)
        details = message_details(client, ids)

    assert {d["email"] for d in details if d["status"] == "Failed"} == rejected
    assert {d["email"] for d in details if d["status"] == "Sent"} == set(recipients) - rejected
    rendered = {m["message_id"]: m for m in fake_ses.get("/_bench/messages")}
    assert len(rendered) == len(recipients) - len(rejected)  # nothing sent twice

    signer = TokenSigner(TRACKING_SECRET.encode())
    tokens: dict[int, str] = {}
    for detail in details:
        if detail["status"] != "Sent":
            continue
        message = rendered[detail["message_id"]]
        assert message["to"] == detail["email"]
        assert message["subject"] == "Bulk newsletter"
        assert message["text"] == "Hello\n\nfrom sesender"
        headers = {h["Name"]: h["Value"] for h in message["headers"]}
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        tags = {t["Name"]: t["Value"] for t in message["tags"]}
        assert tags[REQUEST_ID_TAG] == str(detail["request_id"])
        assert tags[TOPIC_TAG] == "bulk"
        match = PIXEL.search(message["html"])
        assert match is not None, message["html"]
        assert message["html"].index(match.group(0)) < message["html"].index("</body>")
        parts = urlsplit(unescape(match.group(1)))
        (token,) = parse_qs(parts.query)["request_id"]
        assert signer.verify("open", token) == detail["request_id"]
        tokens[detail["request_id"]] = token

    # The pixel the fake rendered for one email counts an open for that email only.
    opened = next(iter(tokens))
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        assert (
            anonymous.get("/v1/events/open", params={"request_id": tokens[opened]}).status_code
            == 200
        )
    with service.client() as client:

        def opens() -> list[dict[str, Any]] | None:
            events = client.get(f"/v1/messages/{opened}").json()["events"]
            found = [event for event in events if event["type"] == "Open"]
            return found or None

        wait_for(opens, timeout=10, what="the Open event")
        assert client.get("/v1/topics/bulk").json()["result_counts"]["Open"] == 1

    # A refusal fails that email at its first attempt, for good, with SES's reason.
    rejected_code = "MESSAGE_REJECTED" if mode == "bulk" else "MessageRejected"
    for detail in details:
        if detail["status"] == "Failed":
            assert detail["attempts"] == 1, detail
            assert detail["failure_kind"] == "permanent", detail
            assert rejected_code in detail["error"], detail
            assert detail["message_id"] is None
        else:
            assert detail["attempts"] == 1, detail
            assert rendered[detail["message_id"]]["bulk"] is (mode == "bulk")

    stats = fake_ses.get("/_bench/stats")
    if mode == "single":
        assert stats["send_bulk_email"] == 0
        assert stats["send_email"] == len(recipients)
    else:
        # Every recipient was one entry of a bulk call, and the calls held more than 8 entries
        # on average: with every 8th address refused, calls mixed SUCCESS and MESSAGE_REJECTED.
        assert stats["send_email"] == 0
        assert stats["bulk_entries"] == len(recipients)
        assert stats["send_bulk_email"] < len(recipients) / 8
    assert service.stop(timeout=15) == 0


def test_bulk_mode_sends_through_send_bulk_email(
    start_service: Callable[..., ServiceProcess], fake_ses: FakeSes
) -> None:
    service = start(start_service, fake_ses, "bulk")
    recipients = [f"user{n}@example.org" for n in range(200)]
    with service.client() as client:
        submit(client, topic="bulk", emails=recipients, subject="Bulk", content="<p>Hi</p>")
        wait_topic(client, "bulk", count=len(recipients), timeout=60)
    stats = fake_ses.get("/_bench/stats")
    assert stats["bulk_entries"] > len(recipients) / 2
    assert stats["send_bulk_email"] < stats["bulk_entries"]
    assert service.stop(timeout=15) == 0


def wire_emails(count: int) -> list[OutgoingEmail]:
    """Emails of one content as compose makes them; every tenth recipient is ``rejected``."""
    signer = TokenSigner(TRACKING_SECRET.encode())
    source = "<html><body><p>Hi &amp; welcome</p></body></html>"
    emails = []
    for request_id in range(1, count + 1):
        recipient = f"rejected{request_id}@example.org" if request_id % 10 == 0 else None
        pixel_url = f"{PUBLIC_URL}/v1/events/open?request_id={signer.sign('open', request_id)}"
        emails.append(
            OutgoingEmail(
                request_id=request_id,
                topic_id="wire",
                sender=SENDER,
                recipient=recipient or f"user{request_id}@example.org",
                subject="Wire",
                html=insert_pixel(source, pixel_url),
                headers=(("List-Unsubscribe", f"<{PUBLIC_URL}/u/{request_id}>"),),
                tags=((REQUEST_ID_TAG, str(request_id)), (TOPIC_TAG, "wire")),
                source_html=source,
                pixel_url=pixel_url,
            )
        )
    return emails


async def backend_against(fake: FakeSes) -> SesBackend:
    lane = ThreadLane("ses", 4)
    client = await lane.run(
        lambda: build_ses_client(
            region="us-east-1",
            pool_size=4,
            connect_timeout=2,
            read_timeout=5,
            endpoint_url=fake.url,
            access_key_id="testing",
            secret_access_key="testing",
        )
    )
    return SesBackend(client=client, lane=lane)


async def test_the_backend_sends_bulk_calls_over_http_that_the_fake_renders_per_recipient(
    fake_ses: FakeSes,
) -> None:
    """``SesBackend.send_batch`` with the real client: what goes over the wire, per entry."""
    emails = wire_emails(120)
    backend = await backend_against(fake_ses)
    try:
        results = await backend.send_batch(emails)
    finally:
        await backend.aclose()

    rendered = {m["message_id"]: m for m in fake_ses.get("/_bench/messages")}
    for sent, result in zip(emails, results, strict=True):
        if sent.recipient.startswith("rejected"):
            assert isinstance(result, PermanentSendError)
            assert result.code == "MESSAGE_REJECTED"
            continue
        assert isinstance(result, str)
        message = rendered[result]
        assert message["bulk"] is True
        assert message["to"] == sent.recipient
        assert message["html"] == sent.html  # the pixel of this very email
        assert message["headers"] == [{"Name": "List-Unsubscribe", "Value": sent.headers[0][1]}]
    stats = fake_ses.get("/_bench/stats")
    assert stats == {
        "send_email": 0,
        "send_bulk_email": 3,
        "bulk_entries": 120,
        "peak_delayed": 0,
    }
    assert backend.statistics().bulk_calls == 3


async def test_a_throttled_bulk_call_retries_all_its_emails_and_only_them() -> None:
    with running_fake_ses("--throttle-every", "2") as fake:
        emails = wire_emails(100)  # two calls of 50: one of them answers 429
        backend = await backend_against(fake)
        try:
            results = await backend.send_batch(emails)
        finally:
            await backend.aclose()
        stats = fake.get("/_bench/stats")
    throttled = [r for r in results if isinstance(r, TransientSendError) and r.throttled]
    assert len(throttled) == 50
    assert all(r.code == "TooManyRequestsException" for r in throttled)
    assert sum(isinstance(r, str) for r in results) == 50
    assert stats["send_bulk_email"] == 2
    assert backend.statistics().throttled == 50


async def test_the_soak_fake_answers_bulk_calls_entry_by_entry() -> None:
    options = ("--throttle", "0.3", "--entry-throttle", "0.2", "--max-latency", "0.001")
    with running_fake_ses(*options, "--min-latency", "0", module="bench.soak_fake_ses") as fake:
        backend = await backend_against(fake)
        try:
            results = await backend.send_batch(wire_emails(400))
        finally:
            await backend.aclose()
        stats = fake.get("/_soak/stats")
    sent = [r for r in results if isinstance(r, str)]
    throttled = [r for r in results if isinstance(r, TransientSendError) and r.throttled]
    assert len(sent) + len(throttled) == 400
    assert {r.code for r in throttled} <= {"TooManyRequestsException", "ACCOUNT_THROTTLED"}
    assert len(set(sent)) == len(sent) == stats["accepted"] == stats["recipients"]
    assert stats["duplicates"] == 0
    assert 0 < len(sent) < 400
