"""End to end: click tracking through the real service (a process) and ``bench.fake_ses``.

A message with links is sent with its links rewritten (SendBulkEmail and SendEmail); following a
link as a browser would, without following the redirect, records one unique click and answers a
302 to the exact original URL (query string and fragment included); no alteration of the tracked
URL ever redirects anywhere else or records anything; per-link statistics add up; and in a bulk
call every recipient's links carry its own token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sesender.tracking import TokenSigner
from tests.e2e.fake_ses_support import SENDER, FakeSes, running_fake_ses
from tests.e2e.harness import (
    ServiceProcess,
    message_details,
    outbox_files,
    submit,
    wait_for,
    wait_topic,
)
from tests.e2e.sns_support import LOOPBACK_PATTERN, SnsMinter, post_sns

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://links.example.test"
TRACKING_SECRET = "e2e-click-tracking-secret"
SALE = "https://shop.example.com/sale?utm_source=mail&utm_campaign=x%20y#top"
BLOG = "https://blog.example.com/post/1"
OTHER = "https://other.example.com/page?a=1"
CONTENT = (
    "<html><body><h1>News</h1>"
    '<p><a href="https://shop.example.com/sale?utm_source=mail&amp;utm_campaign=x%20y#top">'
    "Sale</a></p>"
    '<p><a href="mailto:help@example.com">Write to us</a></p>'
    '<p><a data-no-track href="https://private.example.com/">Private</a></p>'
    "<p><a class='x' href='https://blog.example.com/post/1'>Blog</a></p>"
    "</body></html>"
)
OTHER_CONTENT = (
    '<html><body><p><a href="https://other.example.com/page?a=1">Other</a></p></body></html>'
)
HREF = re.compile(r"""href=["']([^"']+)["']""")
CLICK_URL = re.compile(r"/v1/events/click/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)$")


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with running_fake_ses() as fake:
        yield fake


def start(
    start_service: Callable[..., ServiceProcess], fake: FakeSes, mode: str, **extra: str
) -> ServiceProcess:
    return start_service(
        **extra,
        API_KEY="e2e-clicks-key",
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


def tracked_links(html: str) -> list[tuple[str, str]]:
    """(token, code) of each tracked link of ``html``, in order."""
    found = []
    for href in HREF.findall(html):
        url = unescape(href)
        if url.startswith(PUBLIC_URL):
            match = CLICK_URL.search(urlsplit(url).path)
            assert match is not None, url
            found.append((match.group(1), match.group(2)))
    return found


def alterations(text: str) -> Iterator[str]:
    """``text`` with each character changed, truncated, and extended."""
    for index, character in enumerate(text):
        yield text[:index] + ("A" if character != "A" else "B") + text[index + 1 :]
    yield text[:-1]
    yield text[: len(text) // 2]
    yield text + "A"


@pytest.mark.parametrize("mode", ["bulk", "single"])
def test_tracked_links_redirect_count_once_and_resist_tampering(
    start_service: Callable[..., ServiceProcess], fake_ses: FakeSes, mode: str
) -> None:
    service = start(start_service, fake_ses, mode)
    recipients = [f"reader{n}@example.org" for n in range(60)]
    with service.client() as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {
                        "topic_id": "news",
                        "emails": recipients,
                        "subject": "News",
                        "content": CONTENT,
                        "track_clicks": True,
                    },
                    {
                        "topic_id": "other",
                        "emails": ["someone@example.org"],
                        "subject": "Other",
                        "content": OTHER_CONTENT,
                        "track_clicks": True,
                    },
                    {
                        "topic_id": "plain",
                        "emails": ["plain@example.org"],
                        "subject": "Plain",
                        "content": CONTENT,
                    },
                ]
            },
        )
        assert response.status_code == 200, response.text
        first = response.json()["first_request_id"]
        ids = range(first, first + len(recipients))
        wait_topic(client, "news", count=len(recipients), timeout=60)
        wait_topic(client, "other", count=1, timeout=60)
        wait_topic(client, "plain", count=1, timeout=60)
        details = message_details(client, [*ids, first + len(recipients), first + 61])
        # Before any click, the topic lists its tracked links with zeros.
        links = client.get("/v1/topics/news/links").json()["links"]
        assert {link["url"]: (link["unique_clicks"], link["total_clicks"]) for link in links} == {
            SALE: (0, 0),
            BLOG: (0, 0),
        }

    rendered = {m["message_id"]: m for m in fake_ses.messages()}
    by_id = {detail["request_id"]: rendered[detail["message_id"]] for detail in details}
    signer = TokenSigner(TRACKING_SECRET.encode())
    for request_id in ids:
        message = by_id[request_id]
        assert message["bulk"] is (mode == "bulk")
        links = tracked_links(message["html"])
        assert len(links) == 2, message["html"]
        # Each recipient's links are its own: its token, whatever the call carried.
        assert {signer.verify("click", token) for token, _ in links} == {request_id}
        assert 'href="mailto:help@example.com"' in message["html"]
        assert 'data-no-track href="https://private.example.com/"' in message["html"]
        # The text part shows the same tracked links.
        assert message["text"].count(f"{PUBLIC_URL}/v1/events/click/{links[0][0]}/") == 2
        assert SALE not in message["text"]
    untracked = by_id[first + 61]
    assert tracked_links(untracked["html"]) == []
    assert (
        'href="https://shop.example.com/sale?utm_source=mail&amp;utm_campaign=x%20y#top"'
        in (untracked["html"])
    )

    reader = ids[7]
    (sale_token, sale_code), (_, blog_code) = tracked_links(by_id[reader]["html"])
    (other_token, other_code) = tracked_links(by_id[first + len(recipients)]["html"])[0]

    def path(token: str, code: str) -> str:
        return f"/v1/events/click/{token}/{code}"

    browser = httpx.Client(
        base_url=service.url,
        timeout=30,
        follow_redirects=False,
        headers={"User-Agent": "Mozilla/5.0 (e2e browser)"},
    )
    with browser, service.client() as client:

        def clicks(topic: str = "news") -> dict[str, Any]:
            return dict(client.get(f"/v1/topics/{topic}").json().get("clicks", {}))

        followed = browser.get(path(sale_token, sale_code))
        assert followed.status_code == 302, followed.text
        assert followed.headers["location"] == SALE
        assert "no-store" in followed.headers["cache-control"]
        wait_for(lambda: clicks() == {"unique": 1, "total": 1}, timeout=10, what="the click")
        events = client.get(f"/v1/messages/{reader}").json()["events"]
        (click,) = [event for event in events if event["type"] == "Click"]
        assert SALE in click["detail"]
        assert "e2e browser" in click["detail"]
        assert "delay_ms" in click["detail"]

        # The same link again: one more click, still one clicking email.
        assert browser.get(path(sale_token, sale_code)).headers["location"] == SALE
        # The other link of the same email, with a query string that tries to choose the
        # target: the stored link it is.
        evil = browser.get(path(sale_token, blog_code), params={"url": "https://evil.example"})
        assert evil.status_code == 302
        assert evil.headers["location"] == BLOG
        wait_for(lambda: clicks() == {"unique": 1, "total": 3}, timeout=10, what="3 clicks")

        # Every alteration of the token or the code, a code of another content's link, a
        # token of another content: a plain page, never a redirect, never a 5xx.
        attempts = [path(token, sale_code) for token in alterations(sale_token)]
        attempts += [path(sale_token, code) for code in alterations(sale_code)]
        attempts += [path(sale_token, other_code), path(other_token, sale_code)]
        attempts += ["/v1/events/click/" + sale_token, f"{path(sale_token, sale_code)}/x"]
        for attempt in attempts:
            answer = browser.get(attempt)
            assert answer.status_code in (404, 405), (attempt, answer.status_code)
            assert "location" not in answer.headers, attempt
        # HEAD (what link scanners often send) redirects without counting.
        head = browser.head(path(sale_token, sale_code))
        assert head.status_code == 302
        assert head.headers["location"] == SALE

        # Nothing above was recorded: the last click in makes exactly 4 (and 2 unique).
        second = ids[8]
        (token, code), _ = tracked_links(by_id[second]["html"])
        assert browser.get(path(token, code)).headers["location"] == SALE
        wait_for(lambda: clicks() == {"unique": 2, "total": 4}, timeout=10, what="4 clicks")
        stats = client.get("/v1/topics/news").json()
        assert stats["result_counts"]["Click"] == 2
        links = client.get("/v1/topics/news/links").json()["links"]
        assert links == [
            {"url": SALE, "unique_clicks": 2, "total_clicks": 3},
            {"url": BLOG, "unique_clicks": 1, "total_clicks": 1},
        ]
        assert clicks("other") == {}
        assert client.get("/v1/topics/other/links").json()["links"] == [
            {"url": OTHER, "unique_clicks": 0, "total_clicks": 0}
        ]
    assert service.stop(timeout=15) == 0


def ses_event(kind: str, ses_message_id: str, request_id: int, **detail: str) -> str:
    """An SES event-publishing ``Open`` or ``Click`` event for one sent email."""
    return json.dumps(
        {
            "eventType": kind,
            "mail": {
                "timestamp": "2026-01-15T10:00:00.000Z",
                "messageId": ses_message_id,
                "destination": ["reader@example.org"],
                "tags": {"sesender_request_id": [str(request_id)]},
            },
            kind.lower(): {
                "timestamp": "2026-01-15T10:05:00.000Z",
                "ipAddress": "192.0.2.1",
                "userAgent": "SES-seen browser",
                **detail,
            },
        }
    )


def test_ses_open_and_click_events_count_with_sesenders_own_never_twice(
    start_service: Callable[..., ServiceProcess], fake_ses: FakeSes, minter: SnsMinter
) -> None:
    service = start(
        start_service,
        fake_ses,
        "bulk",
        SNS_CERT_URL_PATTERN=LOOPBACK_PATTERN,
        TRACK_CLICKS="true",  # the service's default this time, no per-message choice
    )
    with service.client() as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {
                        "topic_id": "ses-events",
                        "emails": ["reader@example.org", "other@example.org"],
                        "subject": "News",
                        "content": CONTENT,
                    }
                ]
            },
        )
        assert response.status_code == 200, response.text
        first = response.json()["first_request_id"]
        wait_topic(client, "ses-events", count=2, timeout=60)
        (detail,) = message_details(client, [first])
    message = {m["message_id"]: m for m in fake_ses.messages()}[detail["message_id"]]
    (token, code), _ = tracked_links(message["html"])
    own_link = f"{PUBLIC_URL}/v1/events/click/{token}/{code}"
    pixel = re.search(r'<img src="([^"]+)"', message["html"])
    assert pixel is not None
    ses_id = detail["message_id"]

    browser = httpx.Client(base_url=service.url, timeout=30, follow_redirects=False)
    with browser, service.client() as client:
        # SES saw the click on sesender's link (SES click tracking wraps it): not counted, the
        # redirect that follows counts it.
        body = minter.notification(ses_event("Click", ses_id, first, link=own_link))
        assert post_sns(browser, body).status_code == 200
        assert browser.get(f"/v1/events/click/{token}/{code}").headers["location"] == SALE
        # A click SES tracked on a link sesender did not rewrite: counted, per link.
        body = minter.notification(
            ses_event("Click", ses_id, first, link="https://private.example/")
        )
        assert post_sns(browser, body).status_code == 200
        # An open seen by both pixels: one opened email.
        body = minter.notification(ses_event("Open", ses_id, first))
        assert post_sns(browser, body).status_code == 200
        assert browser.get(unescape(pixel.group(1)).replace(PUBLIC_URL, "")).status_code == 200

        def opened_twice() -> bool:
            events = client.get(f"/v1/messages/{first}").json()["events"]
            return any(e["type"] == "Open" and e["count"] == 2 for e in events)

        # Both pixels saw the email: one row, counted twice there, once in the topic.
        wait_for(opened_twice, timeout=10, what="both opens")
        stats = wait_for(
            lambda: (
                (found := client.get("/v1/topics/ses-events").json()).get("clicks", {}).get("total")
                == 2
                and found
            ),
            timeout=10,
            what="two clicks",
        )
        assert stats["result_counts"]["Open"] == 1
        assert stats["result_counts"]["Click"] == 1
        assert stats["clicks"] == {"unique": 1, "total": 2}
        links = client.get("/v1/topics/ses-events/links").json()["links"]
        assert {link["url"]: (link["unique_clicks"], link["total_clicks"]) for link in links} == {
            SALE: (1, 1),
            "https://private.example/": (1, 1),
            BLOG: (0, 0),
        }
    assert service.stop(timeout=15) == 0


def test_tracked_links_keep_working_after_a_restart_with_the_outbox_backend(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """No TRACKING_SECRET: the generated secret and the stored links are the database's, so a
    link sent before a restart still redirects (and counts) after it."""
    env = {"SENDER_BACKEND": "outbox", "TRACK_CLICKS": "true"}
    service = start_service(**env)
    with service.client() as client:
        ids = submit(client, topic="restart", emails=["reader@example.org"], content=CONTENT)
        wait_topic(client, "restart", count=1, timeout=60)
    (path,) = outbox_files(tmp_path / "outbox")
    message = BytesParser(policy=default_policy).parsebytes(path.read_bytes())
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    hrefs = [urlsplit(unescape(href)).path for href in HREF.findall(html)]
    tracked = [href for href in hrefs if CLICK_URL.search(href)]
    assert len(tracked) == 2, html
    assert service.stop(timeout=15) == 0

    service = start_service(**env)  # the same database
    browser = httpx.Client(base_url=service.url, timeout=30, follow_redirects=False)
    with browser, service.client() as client:
        assert browser.get(tracked[1]).headers["location"] == BLOG
        wait_for(
            lambda: (
                client.get("/v1/topics/restart").json().get("clicks") == {"unique": 1, "total": 1}
            ),
            timeout=10,
            what="the click after the restart",
        )
        (detail,) = message_details(client, ids)
        assert [event["type"] for event in detail["events"]] == ["Click"]
    assert service.stop(timeout=15) == 0
