"""Click tracking through the SES backend: composed emails with tracked links go into bulk calls
(one template per content, each recipient's token in its replacement data) and read exactly as
SendEmail would send them, HTML and text part."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import build_send_email_request
from sesender.backends.ses_bulk import bulk_key
from sesender.links import CLICK_FIELD
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.pixel import insert_pixel
from sesender.tracking import TokenSigner
from tests.unit.backends.test_ses_backend import isolate_aws_environment
from tests.unit.backends.test_ses_bulk import (
    RecordingClient,
    as_ses_would_render,
    backend_for,
    recipients_of,
)

SIGNER = TokenSigner(b"bulk-clicks-secret-of-enough-length")
COMPOSER = MessageComposer(
    sender="news@example.com",
    public_url="https://sesender.example",
    signer=SIGNER,
    configuration_set=None,
    unsubscribe_enabled=True,
)
NEWSLETTER = (
    "<html><body><h1>Sale</h1>"
    '<p><a href="https://shop.example/sale?a=1&amp;b=2#top">Shop</a> or'
    ' <a href="https://blog.example/">read</a>, <a href="mailto:x@example.com">write</a>.</p>'
    "</body></html>"
)


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


def composed(
    count: int, body: str, *, data: dict[str, str] | None = None, opens: bool = True
) -> list[OutgoingEmail]:
    content = Content(subject="Hi {{name}}" if data else "Hi", body=body)
    return [
        COMPOSER.compose(
            ClaimedEmail(
                request_id=n,
                topic_id="t",
                email=f"reader{n}@example.org",
                content=content,
                attempts=0,
                data=None if data is None else {**data, "name": f"Reader {n}"},
                track_opens=opens,
                track_clicks=True,
            )
        )
        for n in range(1, count + 1)
    ]


def assert_bulk_reads_as_single(client: RecordingClient, emails: list[OutgoingEmail]) -> None:
    for mail in emails:
        bulk = [r for r in client.bulks if mail.recipient in recipients_of(r)]
        assert bulk, f"{mail.recipient} was not sent in a bulk call"
        single = build_send_email_request(mail)["Content"]["Simple"]
        assert as_ses_would_render(bulk[0], mail.recipient) == (
            single["Subject"]["Data"],
            single["Body"]["Html"]["Data"],
            single["Body"].get("Text", {}).get("Data"),
        )


@pytest.mark.parametrize("opens", [True, False])
@pytest.mark.parametrize("template", [False, True])
async def test_tracked_emails_share_one_template_and_keep_their_own_tokens(
    template: bool, opens: bool
) -> None:
    body = (
        NEWSLETTER.replace("<h1>Sale</h1>", "<h1>Sale for {{name}}</h1>")
        if template
        else NEWSLETTER
    )
    emails = composed(60, body, data={"x": "1"} if template else None, opens=opens)
    client = RecordingClient()
    results = await backend_for(client).send_batch(emails)
    assert all(isinstance(result, str) for result in results)
    assert client.singles == []
    assert len(client.bulks) == 2  # 30 + 30: one template per call
    for request in client.bulks:
        html = request["DefaultContent"]["Template"]["TemplateContent"]["Html"]
        assert html.count("{{" + CLICK_FIELD + "}}") == 2  # two tracked links, mailto untouched
        assert "https://shop.example" not in html
    assert_bulk_reads_as_single(client, emails)
    for mail in emails:
        single = build_send_email_request(mail)["Content"]["Simple"]
        token = SIGNER.sign("click", mail.request_id)
        assert single["Body"]["Html"]["Data"].count(f"/v1/events/click/{token}/") == 2
        assert single["Body"]["Text"]["Data"].count(f"/v1/events/click/{token}/") == 2


FRAGMENTS = [
    "<p>",
    "</p>",
    '<a href="https://a.example/x?y=1&amp;z=2#f">',
    "<a href='http://b.example'>",
    '<a data-no-track href="https://c.example">',
    '<a href="mailto:x@example.com">',
    "</a>",
    "https://a.example/x",
    "Hello &amp; ",
    "<br>",
    "<body>",
    "</body>",
]


@given(fragments=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_tracked_plain_content_reads_the_same_through_bulk_and_single(
    fragments: list[str],
) -> None:
    emails = composed(3, "<html>" + "".join(fragments) + "</html>")
    client = RecordingClient()
    trio.run(backend_for(client).send_batch, emails)
    assert_bulk_reads_as_single(client, emails)


@pytest.mark.parametrize(
    ("opens", "clicks", "shares"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_without_its_source_html_an_email_shares_a_call_only_if_nothing_was_inserted(
    opens: bool, clicks: bool, shares: bool
) -> None:
    """The template is rebuilt from the HTML before the pixel and the link rewriting; an email
    that does not carry it can go in a bulk call only as it is (no pixel, no tracked links)."""
    (mail,) = composed(1, NEWSLETTER, opens=opens)
    if not clicks:
        mail = replace(mail, tracked=None, click_token=None, html=mail.source_html or "")
        if opens:
            mail = replace(mail, html=insert_pixel(mail.html, mail.pixel_url or ""))
    else:
        assert mail.tracked is not None
    if not opens:
        assert mail.pixel_url is None
    assert (bulk_key(replace(mail, source_html=None)) is not None) is shares


def test_a_tracked_email_that_is_not_its_rendering_goes_alone() -> None:
    (mail,) = composed(1, NEWSLETTER, opens=False)
    assert bulk_key(mail) is not None
    assert bulk_key(replace(mail, html=mail.html.replace("Sale", "Sold"))) is None
