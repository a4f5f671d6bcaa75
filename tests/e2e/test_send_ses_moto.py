"""End to end against a real HTTP SES endpoint: moto's server, the service as a process.

The service is started with ``SENDER_BACKEND=ses`` and boto3's own ``AWS_ENDPOINT_URL_SESV2``
pointing at a ``ThreadedMotoServer`` on 127.0.0.1. What SES was asked to send is read back from
moto's state API (``GET /moto-api/data.json``), never from moto's in-process objects: the service
is another process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sesender.tracking import TokenSigner
from tests.e2e.harness import (
    ServiceProcess,
    message_details,
    submit,
    wait_for,
    wait_topic,
)
from tests.e2e.sns_support import REGION, SENDER, MotoSes
from tests.e2e.sns_support import moto_ses as start_moto_ses

pytestmark = pytest.mark.e2e

PUBLIC_URL = "http://tracking.example.test"
TRACKING_SECRET = "e2e-ses-moto-tracking-secret"
PIXEL = re.compile(r'<img src="([^"]+)"')


@pytest.fixture
def moto_ses() -> Iterator[MotoSes]:
    """A moto server on a free loopback port, reset, with the sender's domain as identity."""
    with start_moto_ses(identity=SENDER.split("@")[1]) as server:
        yield server


def test_500_emails_through_moto_ses_with_signed_pixels(
    start_service: Callable[..., ServiceProcess], moto_ses: MotoSes
) -> None:
    api_key = "e2e-ses-moto-key"
    service = start_service(
        API_KEY=api_key,
        SENDER_BACKEND="ses",
        SES_SEND_MODE="single",  # moto does not implement SendBulkEmail
        AWS_ENDPOINT_URL_SESV2=moto_ses.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_SES_FROM_EMAIL=SENDER,
        MAX_SEND_PER_SECOND="200",
        SERVER_URL=PUBLIC_URL,
        TRACKING_SECRET=TRACKING_SECRET,
    )
    recipients = [f"user{n}@example.org" for n in range(500)]
    with service.client() as client:
        ids = submit(
            client,
            topic="moto",
            emails=recipients,
            subject="Moto newsletter",
            content="<html><body><h1>Hello</h1><p>from sesender</p></body></html>",
        )
        wait_topic(client, "moto", count=500, timeout=60)
        details = message_details(client, ids)

    assert {d["email"] for d in details} == set(recipients)
    assert all(d["status"] == "Sent" and d["attempts"] == 1 for d in details), [
        d for d in details if d["status"] != "Sent" or d["attempts"] != 1
    ][:3]

    recorded = {m["id"]: m for m in moto_ses.messages()}
    assert len(recorded) == 500  # exactly one SendEmail per email, no retries
    by_request = {d["request_id"]: d for d in details}
    # Every stored SES message id is one moto handed out, for that email's recipient.
    for detail in details:
        message = recorded.get(detail["message_id"])
        assert message is not None, f"unknown SES message id for {detail}"
        assert message["destinations"] == {"ToAddresses": [detail["email"]]}
        assert message["source"] == SENDER
        assert message["subject"] == "Moto newsletter"

    # Every body carries a pixel before </body> whose token verifies to the right request id.
    signer = TokenSigner(TRACKING_SECRET.encode())
    tokens: dict[int, str] = {}
    for detail in details:
        body = recorded[detail["message_id"]]["body"]
        match = PIXEL.search(body)
        assert match is not None, body
        assert body.index(match.group(0)) < body.index("</body>")
        pixel_url = unescape(match.group(1))
        parts = urlsplit(pixel_url)
        assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
        assert parts.path == "/v1/events/open"
        (token,) = parse_qs(parts.query)["request_id"]
        assert signer.verify("open", token) == detail["request_id"]
        tokens[detail["request_id"]] = token
    assert set(tokens) == set(by_request)

    # Opening the pixel (on the service itself) records an Open for that email only.
    opened, other = ids[7], ids[8]
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        pixel = anonymous.get("/v1/events/open", params={"request_id": tokens[opened]})
        assert pixel.status_code == 200
        assert pixel.headers["content-type"] == "image/png"
        assert pixel.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert "no-store" in pixel.headers["cache-control"]
        with service.client() as client:

            def opens(request_id: int, count: int) -> dict[str, Any] | None:
                events = client.get(f"/v1/messages/{request_id}").json()["events"]
                found = [event for event in events if event["type"] == "Open"]
                return found[0] if found and found[0]["count"] >= count else None

            wait_for(lambda: opens(opened, 1), timeout=10, what="the Open event")
            # Opened twice more: one recipient still counts once in the topic statistics.
            for _ in range(2):
                again = anonymous.get("/v1/events/open", params={"request_id": tokens[opened]})
                assert again.status_code == 200
            event = wait_for(lambda: opens(opened, 3), timeout=10, what="three opens")
            assert event["count"] == 3
            # A forged token (another email's token with one character changed), a token of
            # another purpose and a plain id get the same pixel and record nothing.
            forged = tokens[other][:-1] + ("A" if tokens[other][-1] != "A" else "B")
            for value in (forged, signer.sign("unsubscribe", other), str(other)):
                answer = anonymous.get("/v1/events/open", params={"request_id": value})
                assert answer.status_code == 200
                assert answer.content == pixel.content
            # The result writer keeps order: once a later genuine open is recorded, anything
            # the forged ones had queued would be too.
            marker = ids[9]
            anonymous.get("/v1/events/open", params={"request_id": tokens[marker]})
            wait_for(lambda: opens(marker, 1), timeout=10, what="the marker open")
            assert client.get(f"/v1/messages/{other}").json()["events"] == []
            stats = client.get("/v1/topics/moto").json()
            assert stats["result_counts"]["Open"] == 2  # two recipients opened
            assert stats["request_counts"]["Sent"] == 500
    started = time.monotonic()
    assert service.stop(timeout=15) == 0
    assert time.monotonic() - started < 15
