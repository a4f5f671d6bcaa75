"""One-click unsubscribe (RFC 8058) end to end, from the ``.eml`` the outbox backend wrote.

The service runs with ``SENDER_BACKEND=outbox`` and ``UNSUBSCRIBE_ENABLED=true``; each written
message is parsed with the standard library's email parser, and its ``List-Unsubscribe`` URL is
used the way a mailbox provider does: a GET shows a page and changes nothing (link scanners
prefetch URLs), a POST of ``List-Unsubscribe=One-Click`` with no key, no cookie and no redirect
suppresses the address.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.harness import (
    ServiceProcess,
    message_details,
    outbox_files,
    submit,
    wait_for,
    wait_topic,
)
from tests.e2e.sns_support import running_service

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://mail.example.com"
PIXEL = re.compile(r'<img src="([^"]+)"')
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("unsubscribe"),
        API_KEY="e2e-unsubscribe-key",
        SENDER_BACKEND="outbox",
        UNSUBSCRIBE_ENABLED="true",
        SERVER_URL=PUBLIC_URL,
        MAX_SEND_PER_SECOND="100",
        HTTP_READ_TIMEOUT_SECONDS="3",
    ) as running:
        yield running


def outbox(service: ServiceProcess) -> Path:
    return Path(service.env["OUTBOX_DIR"])


def read_messages(directory: Path) -> dict[str, EmailMessage]:
    """Every ``.eml`` in the outbox, parsed, by recipient."""
    parser = BytesParser(policy=policy.default)
    messages: dict[str, EmailMessage] = {}
    for path in outbox_files(directory):
        with path.open("rb") as file:
            message = parser.parse(file)
        assert isinstance(message, EmailMessage)
        messages[str(message["To"])] = message
    return messages


def send(service: ServiceProcess, topic: str, emails: list[str]) -> dict[str, EmailMessage]:
    """Submit, wait until Sent, return the written messages of these recipients."""
    with service.client() as client:
        submit(client, topic=topic, emails=emails)
        wait_topic(client, topic, count=len(emails), timeout=30)
    messages = wait_for(
        lambda: (found := read_messages(outbox(service))) and set(emails) <= set(found) and found,
        timeout=10,
        what="the .eml files",
    )
    return {email: messages[email] for email in emails}


def unsubscribe_target(message: EmailMessage) -> str:
    """The path and query of the message's one-click URL (checked to be on the public URL)."""
    # Long URLs are folded onto the next line (legal RFC 5322 folding): unfold before reading.
    header = str(message["List-Unsubscribe"]).strip()
    match = re.fullmatch(r"<([^<>]+)>", header)
    assert match is not None, header
    url = match.group(1)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL  # https, as RFC 8058 requires
    assert parts.path == "/v1/unsubscribe"
    assert list(parse_qs(parts.query)) == ["token"]
    return f"{parts.path}?{parts.query}"


def pixel_token(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    match = PIXEL.search(body.get_content())
    assert match is not None
    (token,) = parse_qs(urlsplit(unescape(match.group(1))).query)["request_id"]
    return token


def suppressions(service: ServiceProcess) -> dict[str, str]:
    with service.client() as client:
        response = client.get("/v1/suppressions", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {entry["email"]: entry["reason"] for entry in response.json()["suppressions"]}


def provider(service: ServiceProcess, *, keep_alive: bool = False) -> httpx.Client:
    """What a mailbox provider is: no API key, no cookies, never following redirects.

    A new connection per request unless ``keep_alive``: connection reuse after a one-click POST
    is the subject of its own test.
    """
    return httpx.Client(
        base_url=service.url,
        timeout=5 if keep_alive else 30,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
    )


def tamper(target: str) -> str:
    """``target`` with one character of its token changed."""
    path, token = target.split("?token=")
    middle = len(token) // 2
    replacement = "A" if token[middle] != "A" else "B"
    return f"{path}?token={token[:middle]}{replacement}{token[middle + 1 :]}"


def test_messages_carry_both_one_click_headers(service: ServiceProcess) -> None:
    messages = send(service, "headers", ["header-check@example.org"])
    message = messages["header-check@example.org"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_target(message)
    # Each email has its own token.
    other = send(service, "headers-2", ["header-check-2@example.org"])
    assert unsubscribe_target(other["header-check-2@example.org"]) != unsubscribe_target(message)


def test_get_shows_a_page_and_one_click_post_suppresses(service: ServiceProcess) -> None:
    email = "one-click@example.org"
    target = unsubscribe_target(send(service, "one-click", [email])[email])

    with provider(service) as client:
        page = client.get(target)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post"' in page.text
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert email not in suppressions(service)  # a GET (a link scanner) changes nothing

        response = client.post(
            target,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200  # no redirect: RFC 8058
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert not client.cookies
        # Answered only once committed: suppressed at once, no waiting.
        assert suppressions(service)[email] == "unsubscribe"

        # Again (a provider retrying): same answer, still suppressed once.
        again = client.post(target, data=ONE_CLICK)
        assert again.status_code == 200
        assert again.text == response.text

    with service.client() as client:
        ids = submit(client, topic="one-click-again", emails=[email])
        wait_topic(client, "one-click-again", status="Suppressed", count=1, timeout=30)
        (detail,) = message_details(client, ids)
        assert detail["status"] == "Suppressed"


def test_the_page_never_reflects_a_token_as_markup(service: ServiceProcess) -> None:
    hostile = '"><script>alert(1)</script>'
    with provider(service) as client:
        page = client.get("/v1/unsubscribe", params={"token": hostile})
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_multipart_one_click_post_also_suppresses(service: ServiceProcess) -> None:
    email = "multipart@example.org"
    target = unsubscribe_target(send(service, "multipart", [email])[email])
    with provider(service) as client:
        response = client.post(target, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert suppressions(service)[email] == "unsubscribe"


def test_tampered_and_foreign_tokens_are_not_valid_and_suppress_nothing(
    service: ServiceProcess,
) -> None:
    """A token that does not verify answers 404 "not valid" (never "Unsubscribed"), the same page
    whatever is wrong with it, and is logged as a warning without the token."""
    emails = ["kept-1@example.org", "kept-2@example.org"]
    messages = send(service, "tampered", emails)
    target = unsubscribe_target(messages[emails[0]])
    warnings_before = len(service.events("unsubscribe_invalid"))
    with provider(service) as client:
        invalid = client.post("/v1/unsubscribe", params={"token": "x"}, data=ONE_CLICK)
        assert invalid.status_code == 404
        assert "not valid" in invalid.text
        assert "Unsubscribed" not in invalid.text
        assert invalid.headers["content-type"].startswith("text/html")
        invalid_page = invalid.text  # the answer for any token that does not verify
        attempts = [
            tamper(target),
            "/v1/unsubscribe",  # no token at all
            "/v1/unsubscribe?token=1",  # a plain request id, as the original service used
            # The open-tracking token of the same email: signed, but for another purpose.
            f"/v1/unsubscribe?token={pixel_token(messages[emails[1]])}",
        ]
        for attempt in attempts:
            response = client.post(attempt, data=ONE_CLICK)
            assert response.status_code == 404, attempt
            assert response.text == invalid_page, attempt
    listed = suppressions(service)
    assert not set(emails) & set(listed), listed
    warnings = wait_for(
        lambda: (
            (found := service.events("unsubscribe_invalid")[warnings_before:])
            and len(found) == 1 + len(attempts)
            and found
        ),
        timeout=10,
        what="a warning per invalid link",
    )
    assert {warning["level"] for warning in warnings} == {"warning"}
    assert {warning["reason"] for warning in warnings} == {"no token", "token does not verify"}
    tampered_token = tamper(target).split("?token=")[1]
    for raw in service.raw_lines:
        assert tampered_token not in raw

    # The untampered token still works afterwards, with the confirmation page.
    with provider(service) as client:
        response = client.post(target, data=ONE_CLICK)
    assert response.status_code == 200
    assert "Unsubscribed" in response.text
    assert suppressions(service).get(emails[0]) == "unsubscribe"
    assert emails[1] not in suppressions(service)


def test_one_click_posts_on_a_kept_alive_connection_are_all_answered(
    service: ServiceProcess,
) -> None:
    """A provider may send several one-click POSTs over one connection. The handler answers
    without reading the form body; that must not leave the connection unable to serve the next
    request (it stalled until the read timeout, then closed without a response)."""
    email = "keep-alive@example.org"
    target = unsubscribe_target(send(service, "keep-alive", [email])[email])
    with provider(service, keep_alive=True) as client:
        for attempt in range(20):
            try:
                response = client.post(target if attempt % 2 else tamper(target), data=ONE_CLICK)
            except httpx.HTTPError as exc:
                pytest.fail(f"one-click POST {attempt} on a reused connection failed: {exc!r}")
            assert response.status_code == (200 if attempt % 2 else 404)
    assert suppressions(service)[email] == "unsubscribe"
