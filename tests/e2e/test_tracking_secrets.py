"""Pixel and unsubscribe links keep working across restarts and key rotations, end to end.

The service runs with the outbox backend and one-click unsubscribe on; links are read from the
``.eml`` files it wrote, used the way a mail client (pixel) and a mailbox provider (one-click POST)
do, and what they recorded is read back through the API. Every restart is a new process on the
same database.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sesender.tracking import TokenSigner
from tests.e2e.harness import (
    ServiceProcess,
    console_script,
    outbox_files,
    submit,
    wait_for,
    wait_topic,
)

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://mail.example.com"
PIXEL = re.compile(r'<img src="([^"]+)"')
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
LINKS = {"UNSUBSCRIBE_ENABLED": "true", "SERVER_URL": PUBLIC_URL}


def links(service: ServiceProcess, email: str) -> tuple[str, str]:
    """The (pixel token, unsubscribe token) of the .eml written to ``email``."""
    parser = BytesParser(policy=policy.default)

    def find() -> EmailMessage | None:
        for path in outbox_files(Path(service.env["OUTBOX_DIR"])):
            with path.open("rb") as file:
                message = parser.parse(file)
            if str(message["To"]) == email and isinstance(message, EmailMessage):
                return message
        return None

    message: EmailMessage = wait_for(find, timeout=10, what=f"the .eml to {email}")
    body = message.get_body(("html",))
    assert body is not None
    pixel = PIXEL.search(body.get_content())
    assert pixel is not None
    (open_token,) = parse_qs(urlsplit(unescape(pixel.group(1))).query)["request_id"]
    header = str(message["List-Unsubscribe"]).strip().strip("<>")
    (unsubscribe_token,) = parse_qs(urlsplit(header).query)["token"]
    return open_token, unsubscribe_token


def send(service: ServiceProcess, topic: str, email: str) -> tuple[int, str, str]:
    """Send one email; its request id, pixel token and unsubscribe token."""
    with service.client() as client:
        (request_id,) = submit(client, topic=topic, emails=[email])
        wait_topic(client, topic, count=1, timeout=30)
    return (request_id, *links(service, email))


def opens(service: ServiceProcess, request_id: int) -> int:
    with service.client() as client:
        response = client.get(f"/v1/messages/{request_id}")
    assert response.status_code == 200, response.text
    return sum(e["count"] for e in response.json()["events"] if e["type"] == "Open")


def assert_links_work(
    service: ServiceProcess, request_id: int, open_token: str, unsubscribe_token: str, email: str
) -> None:
    """The pixel counts an open for ``request_id``; the one-click POST suppresses ``email``."""
    before = opens(service, request_id)
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        assert (
            anonymous.get("/v1/events/open", params={"request_id": open_token}).status_code == 200
        )
        wait_for(
            lambda: opens(service, request_id) > before, timeout=10, what="the open to be counted"
        )
        posted = anonymous.post(
            "/v1/unsubscribe", params={"token": unsubscribe_token}, data=ONE_CLICK
        )
        assert posted.status_code == 200, posted.text
        assert "Unsubscribed" in posted.text
    with service.client() as client:
        listed = client.get("/v1/suppressions", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    reasons = {entry["email"]: entry["reason"] for entry in listed.json()["suppressions"]}
    assert reasons.get(email) == "unsubscribe"


def stdout_line(service: ServiceProcess, text: str) -> str:
    found: str = wait_for(
        lambda: next((line for line in service.stdout_lines if text in line), None),
        timeout=10,
        what=f"{text!r} on stdout",
    )
    return found


def test_links_and_the_generated_key_survive_a_restart(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """Outbox mode with no API_KEY and no TRACKING_SECRET: both are generated once and kept."""
    first = start_service(API_KEY="", **LINKS)
    key = stdout_line(first, "generated an API key").rsplit(" ", 1)[-1]
    first.env["API_KEY"] = key
    sent = send(first, "before-restart", "restart@example.org")
    assert first.stop() == 0

    second = start_service(API_KEY="", **LINKS)
    second.env["API_KEY"] = key
    stdout_line(second, "using the API key generated earlier")
    assert not any(key in line for line in second.stdout_lines + second.raw_lines)
    with second.client() as client:
        assert client.get("/v1/topics/before-restart").status_code == 200  # the same key
        assert client.get("/v1/topics/x", headers={"X-API-KEY": "wrong"}).status_code == 401
    assert_links_work(second, *sent, "restart@example.org")
    # New links are signed with the same kept secret: they work after yet another restart.
    later = send(second, "after-restart", "later@example.org")
    assert second.stop() == 0

    # reset-api-key: a new key is printed and replaces the old one at the next start.
    reset = subprocess.run(
        [*console_script(), "reset-api-key"],
        cwd=tmp_path,
        env={**os.environ, **second.env, "API_KEY": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reset.returncode == 0, reset.stderr
    new_key = reset.stdout.strip().rsplit(" ", 1)[-1]
    assert new_key != key
    third = start_service(API_KEY="", **LINKS)
    third.env["API_KEY"] = new_key
    stdout_line(third, "using the API key generated earlier")
    with third.client() as client:
        assert client.get("/v1/topics/after-restart").status_code == 200
        old = client.get("/v1/topics/after-restart", headers={"X-API-KEY": key})
        assert old.status_code == 401
    assert_links_work(third, *later, "later@example.org")
    assert third.stop() == 0


def test_a_rotated_tracking_secret_still_accepts_old_links(
    start_service: Callable[..., ServiceProcess],
) -> None:
    old_secret, new_secret = "old-tracking-secret-0123456789", "new-tracking-secret-0123456789"
    first = start_service(TRACKING_SECRET=old_secret, **LINKS)
    sent = send(first, "rotation", "rotation@example.org")
    assert TokenSigner(old_secret.encode()).verify("open", sent[1]) == sent[0]
    assert first.stop() == 0

    second = start_service(
        TRACKING_SECRET=new_secret, TRACKING_SECRETS_PREVIOUS=old_secret, **LINKS
    )
    assert_links_work(second, *sent, "rotation@example.org")
    request_id, open_token, unsubscribe_token = send(second, "rotated", "rotated@example.org")
    new, old = TokenSigner(new_secret.encode()), TokenSigner(old_secret.encode())
    assert new.verify("open", open_token) == request_id
    assert new.verify("unsubscribe", unsubscribe_token) == request_id
    assert old.verify("open", open_token) is None
    assert second.stop() == 0

    # Once the old secret is dropped from the list, its links are refused.
    third = start_service(TRACKING_SECRET=new_secret, **LINKS)
    with httpx.Client(base_url=third.url, timeout=30) as anonymous:
        refused = anonymous.post("/v1/unsubscribe", params={"token": sent[2]}, data=ONE_CLICK)
    assert refused.status_code == 404
    assert third.stop() == 0


def test_rotating_the_api_key_keeps_links_signed_with_the_tracking_secret(
    start_service: Callable[..., ServiceProcess],
) -> None:
    secret = "kept-tracking-secret-0123456789"
    first = start_service(API_KEY="first-api-key", TRACKING_SECRET=secret, **LINKS)
    sent = send(first, "key-rotation", "key-rotation@example.org")
    assert first.stop() == 0

    second = start_service(API_KEY="second-api-key", TRACKING_SECRET=secret, **LINKS)
    with second.client() as client:
        stale = client.get("/v1/topics/key-rotation", headers={"X-API-KEY": "first-api-key"})
        assert stale.status_code == 401
    assert_links_work(second, *sent, "key-rotation@example.org")
    assert second.stop() == 0
