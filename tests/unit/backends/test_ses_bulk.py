"""SesBackend.send_batch: SendBulkEmail grouping, requests, per-entry results and fallbacks.

Every request is checked against botocore's service model (the real client skips that check
for speed): by botocore's own client-side validation in the Stubber tests, and by
``validate_parameters`` in the recording client, which answers concurrent calls in any order.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any

import boto3.session
import botocore.session
import pytest
import trio
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from hypothesis import event, given, settings
from hypothesis import strategies as st

from actors import ThreadLane
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import SesBackend, build_send_email_request
from sesender.backends.ses_bulk import (
    MAX_BULK_ENTRIES,
    PIXEL_FIELD,
    build_bulk_request,
    bulk_key,
    bulk_template,
    chunk_sizes,
    entry_result,
    split_value,
)
from sesender.backends.text import text_part
from sesender.config import SesSendMode
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)
from sesender.pipeline.pixel import insert_pixel
from sesender.templating import MergeFields
from tests.unit.backends.test_ses_backend import client_error, isolate_aws_environment
from tests.waiting import wait_until

REGION = "us-east-1"
SOURCE_HTML = (
    '<html><body><h1>Spring sale</h1><p>See <a href="https://example.com/offer">our offer</a>'
    "</p></body></html>"
)
PUBLIC_URL = "https://sesender.example"
MODEL = botocore.session.get_session().get_service_model("sesv2")


def pixel_url(request_id: int) -> str:
    return f"{PUBLIC_URL}/v1/events/open?request_id=tok-{request_id}_x"


def unsubscribe_url(request_id: int) -> str:
    return f"{PUBLIC_URL}/v1/unsubscribe?token=unsub-{request_id}"


def email(
    request_id: int,
    *,
    subject: str = "Spring sale",
    source_html: str = SOURCE_HTML,
    recipient: str | None = None,
    topic: str = "spring-sale",
    pixel: bool = True,
    configuration_set: str | None = "marketing",
) -> OutgoingEmail:
    """An email as compose makes it: pixel, List-Unsubscribe headers, request id and topic tags."""
    url = pixel_url(request_id) if pixel else None
    return OutgoingEmail(
        request_id=request_id,
        topic_id=topic,
        sender="Shop <news@example.com>",
        recipient=recipient or f"user{request_id}@example.org",
        subject=subject,
        html=insert_pixel(source_html, url) if url else source_html,
        headers=(
            ("List-Unsubscribe", f"<{unsubscribe_url(request_id)}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ),
        tags=(("request_id", str(request_id)), ("topic", topic)),
        configuration_set=configuration_set,
        source_html=source_html,
        pixel_url=url,
    )


PLACEHOLDER = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")


def render(template: str, values: dict[str, str], *, html: bool) -> str:
    """sesender's rendering as the contract describes it: values HTML-escaped in the HTML."""
    return PLACEHOLDER.sub(
        lambda m: escape(values[m.group(1)]) if html else values[m.group(1)], template
    )


def merged_email(
    request_id: int, subject: str, html: str, data: dict[str, str], **changes: Any
) -> OutgoingEmail:
    """A merge-field email: subject and HTML rendered, the template and values kept."""
    base = email(request_id, **changes)
    values = {**data, "email": base.recipient, "unsubscribe_url": unsubscribe_url(request_id)}
    rendered_html = render(html, values, html=True)
    return OutgoingEmail(
        request_id=base.request_id,
        topic_id=base.topic_id,
        sender=base.sender,
        recipient=base.recipient,
        subject=render(subject, values, html=False),
        html=insert_pixel(rendered_html, pixel_url(request_id)),
        headers=base.headers,
        tags=base.tags,
        configuration_set=base.configuration_set,
        source_html=rendered_html,
        pixel_url=pixel_url(request_id),
        merge=MergeFields(subject=subject, html=html, values=values),
    )


def ses_substitute(template: str, data: dict[str, str]) -> str:
    """SES's simple substitution of ``{{name}}`` (the values the backend gives it are safe)."""
    return re.sub(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}", lambda m: data[m.group(1)], template)


def validate(operation: str, request: dict[str, Any]) -> None:
    shape = MODEL.operation_model(operation).input_shape
    assert shape is not None
    validate_parameters(request, shape)  # raises ParamValidationError when invalid


class RecordingClient:
    """A stand-in sesv2 client: validates each request against the model, records it, and
    answers bulk entries by ``status_of(recipient)`` (thread-safe: calls run in the lane)."""

    def __init__(self, status_of: Callable[[str], str] = lambda _: "SUCCESS") -> None:
        self.status_of = status_of
        self.lock = threading.Lock()
        self.singles: list[dict[str, Any]] = []
        self.bulks: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def send_email(self, **request: Any) -> dict[str, Any]:
        validate("SendEmail", request)
        with self.lock:
            self.singles.append(request)
            (recipient,) = request["Destination"]["ToAddresses"]
            return {"MessageId": f"single-{recipient}"}

    def send_bulk_email(self, **request: Any) -> dict[str, Any]:
        validate("SendBulkEmail", request)
        with self.lock:
            self.bulks.append(request)
        if self.error is not None:
            raise self.error
        results = []
        for entry in request["BulkEmailEntries"]:
            (recipient,) = entry["Destination"]["ToAddresses"]
            status = self.status_of(recipient)
            if status == "SUCCESS":
                results.append({"Status": status, "MessageId": f"bulk-{recipient}"})
            else:
                results.append({"Status": status, "Error": f"{status} for {recipient}"})
        return {"BulkEmailEntryResults": results}


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


def backend_for(client: Any, mode: SesSendMode = SesSendMode.BULK) -> SesBackend:
    return SesBackend(client=client, lane=ThreadLane("ses", 4), send_mode=mode)


def recipients_of(request: dict[str, Any]) -> list[str]:
    return [e["Destination"]["ToAddresses"][0] for e in request["BulkEmailEntries"]]


# ---------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("value", "prefix", "tail"),
    [
        ("Ada", "", "Ada"),
        ("Ada Lovelace", "", "Ada Lovelace"),
        ("https://h/v1/unsubscribe?token=abc-1", "https://h/v1/unsubscribe?token=", "abc-1"),
        ("O'Brien", "O'", "Brien"),
        ("a  b", "a  ", "b"),
        ("trailing ", "trailing ", ""),
        ("", "", ""),
        ("<b>", "<b>", ""),
        ("x{{y}}", "x{{y}}", ""),
        ("line\nbreak", "line\n", "break"),
        ("  leading", "  ", "leading"),
        ("no\u00a0break", "no\u00a0", "break"),
        ("a=b c", "a=", "b c"),
    ],
)
def test_split_value_leaves_only_safe_tails_to_ses(value: str, prefix: str, tail: str) -> None:
    assert split_value(value) == (prefix, tail)
    assert prefix + tail == value


SAFE_TAIL = re.compile(r"[^\s&<>\"'`={}\\]+(?: [^\s&<>\"'`={}\\]+)*")


@given(st.text(alphabet=st.sampled_from("ab &<>\"'`={}\\\n\t\u00a0é"), max_size=30))
def test_split_value_tail_is_the_longest_safe_end(value: str) -> None:
    prefix, tail = split_value(value)
    assert prefix + tail == value
    assert tail == "" or SAFE_TAIL.fullmatch(tail)
    # Longest: no longer end of the value is a safe tail.
    assert not any(SAFE_TAIL.fullmatch(value[start:]) for start in range(len(prefix)))


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(1, [1]), (2, [2]), (50, [50]), (51, [26, 25]), (100, [50, 50]), (101, [34, 34, 33])],
)
def test_chunks_are_at_most_50_and_never_leave_one_alone(count: int, sizes: list[int]) -> None:
    assert list(chunk_sizes(count)) == sizes
    assert max(sizes) <= MAX_BULK_ENTRIES


@pytest.mark.parametrize(
    ("status", "kind", "throttled"),
    [
        ("MESSAGE_REJECTED", PermanentSendError, False),
        ("INVALID_PARAMETER", PermanentSendError, False),
        ("ACCOUNT_THROTTLED", TransientSendError, True),
        ("TRANSIENT_FAILURE", TransientSendError, False),
        ("FAILED", TransientSendError, False),
        ("SOMETHING_NEW", TransientSendError, False),
        ("ACCOUNT_SUSPENDED", AccountSendError, False),
        ("ACCOUNT_SENDING_PAUSED", AccountSendError, False),
        ("ACCOUNT_DAILY_QUOTA_EXCEEDED", AccountSendError, False),
        ("CONFIGURATION_SET_SENDING_PAUSED", AccountSendError, False),
        ("MAIL_FROM_DOMAIN_NOT_VERIFIED", SenderSendError, False),
        ("TEMPLATE_NOT_FOUND", AccountSendError, False),
        ("CONFIGURATION_SET_NOT_FOUND", AccountSendError, False),
        ("INVALID_SENDING_POOL_NAME", AccountSendError, False),
    ],
)
def test_entry_statuses_map_to_send_errors(
    status: str, kind: type[SendError], throttled: bool
) -> None:
    result = entry_result({"Status": status, "Error": "why"})  # type: ignore[typeddict-item]
    assert type(result) is kind
    assert isinstance(result, SendError)
    assert result.code == status
    assert "why" in str(result)
    assert getattr(result, "throttled", False) is throttled


def test_success_entry_is_its_message_id() -> None:
    assert entry_result({"Status": "SUCCESS", "MessageId": "0100-abc"}) == "0100-abc"
    # SUCCESS without an id cannot be recorded as Sent: retried.
    assert isinstance(entry_result({"Status": "SUCCESS"}), TransientSendError)


def test_built_bulk_request_satisfies_the_model_and_keeps_each_entrys_own_parts() -> None:
    emails = [email(n) for n in (1, 2, 3)]
    shaped = [bulk_key(e) for e in emails]
    assert all(s is not None for s in shaped)
    keys = {s[0] for s in shaped if s is not None}
    assert len(keys) == 1
    (key,) = keys
    template = bulk_template(key)
    assert template is not None
    request = build_bulk_request(key, template, emails, [s[1] for s in shaped if s is not None])
    validate("SendBulkEmail", dict(request))
    assert request["FromEmailAddress"] == "Shop <news@example.com>"
    assert request["ConfigurationSetName"] == "marketing"
    content = request["DefaultContent"]["Template"]["TemplateContent"]
    assert content["Subject"] == "Spring sale"
    assert content["Text"] == text_part(emails[0])
    for mail, entry in zip(emails, request["BulkEmailEntries"], strict=True):
        n = mail.request_id
        assert entry["Destination"] == {"ToAddresses": [mail.recipient]}
        data = json.loads(
            entry["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]
        )
        # SES's substitution of this entry's data gives exactly the HTML SendEmail would send.
        assert ses_substitute(content["Html"], data) == mail.html
        assert data == {PIXEL_FIELD: f"tok-{n}_x"}
        assert entry["ReplacementHeaders"] == [
            {"Name": "List-Unsubscribe", "Value": f"<{unsubscribe_url(n)}>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ]
        assert entry["ReplacementTags"] == [
            {"Name": "request_id", "Value": str(n)},
            {"Name": "topic", "Value": "spring-sale"},
        ]


# ---------------------------------------------------------------------------------------------
# Against botocore's Stubber, with botocore's own parameter validation switched on


@pytest.fixture(scope="module")
def validating_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_aws_environment(monkeypatch, tmp_path_factory.mktemp("aws"))
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        client = session.client(
            "sesv2",
            endpoint_url="http://127.0.0.1:9",  # never contacted: the Stubber answers
            config=Config(parameter_validation=True, retries={"total_max_attempts": 1}),
        )
    yield client
    client.close()


async def test_stubbed_mixed_answer_maps_each_entry_in_order(validating_client: Any) -> None:
    emails = [email(n) for n in range(1, 6)]
    statuses = ["SUCCESS", "MESSAGE_REJECTED", "SUCCESS", "ACCOUNT_THROTTLED", "SUCCESS"]
    shaped = [bulk_key(e) for e in emails]
    key = shaped[0][0] if shaped[0] else None
    assert key is not None
    template = bulk_template(key)
    assert template is not None
    expected = build_bulk_request(key, template, emails, [s[1] for s in shaped if s])
    with Stubber(validating_client) as stubber:
        stubber.add_response(
            "send_bulk_email",
            {
                "BulkEmailEntryResults": [
                    {"Status": s, "MessageId": f"id-{n}"}
                    if s == "SUCCESS"
                    else {"Status": s, "Error": "no"}
                    for n, s in enumerate(statuses)
                ]
            },
            expected_params=dict(expected),
        )
        backend = backend_for(validating_client)
        results = await backend.send_batch(emails)
        stubber.assert_no_pending_responses()
    assert results[0] == "id-0"
    assert isinstance(results[1], PermanentSendError)
    assert results[1].code == "MESSAGE_REJECTED"
    assert results[2] == "id-2"
    assert isinstance(results[3], TransientSendError)
    assert results[3].throttled
    assert results[4] == "id-4"
    stats = backend.statistics()
    assert (stats.attempts, stats.bulk_calls, stats.bulk_emails) == (1, 1, 5)
    assert (stats.sent, stats.permanent, stats.throttled) == (3, 1, 1)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("TooManyRequestsException", 429, TransientSendError),
        ("InternalFailure", 500, TransientSendError),
        ("SendingPausedException", 400, AccountSendError),
        ("BadRequestException", 400, PermanentSendError),
    ],
)
async def test_stubbed_whole_call_error_is_every_entrys_result(
    validating_client: Any, code: str, status: int, kind: type[SendError]
) -> None:
    emails = [email(n) for n in range(1, 4)]
    with Stubber(validating_client) as stubber:
        stubber.add_client_error(
            "send_bulk_email", service_error_code=code, http_status_code=status
        )
        results = await backend_for(validating_client).send_batch(emails)
        stubber.assert_no_pending_responses()
    assert len(results) == 3
    for result in results:
        assert type(result) is kind
        assert isinstance(result, SendError)
        assert result.code == code
        assert isinstance(result.__cause__, ClientError)


# ---------------------------------------------------------------------------------------------
# Grouping and fallbacks (recording client: concurrent calls in any order)


async def test_mixed_contents_are_grouped_by_content_and_chunked() -> None:
    other_html = "<p>Another newsletter</p>"
    emails = [email(n, source_html=other_html if n % 2 else SOURCE_HTML) for n in range(1, 121)] + [
        email(500, configuration_set=None),
        email(501, configuration_set=None),
    ]
    client = RecordingClient()
    results = await backend_for(client).send_batch(emails)
    assert results == [f"bulk-{e.recipient}" for e in emails]  # every email its own id, in order
    assert client.singles == []
    sizes = sorted(len(r["BulkEmailEntries"]) for r in client.bulks)
    assert sizes == [2, 30, 30, 30, 30]  # 60 + 60 of two contents, 2 without the set
    for request in client.bulks:
        html = request["DefaultContent"]["Template"]["TemplateContent"]["Html"]
        expected_source = other_html if "Another" in html else SOURCE_HTML
        for recipient in recipients_of(request):
            n = int(recipient.removeprefix("user").split("@")[0])
            assert (n % 2 == 1) == (expected_source == other_html) or n >= 500
        assert ("ConfigurationSetName" in request) == ("user500@" not in str(request))


async def test_a_rejected_address_fails_alone() -> None:
    client = RecordingClient(lambda r: "MESSAGE_REJECTED" if r.startswith("user3@") else "SUCCESS")
    emails = [email(n) for n in range(1, 6)]
    results = await backend_for(client).send_batch(emails)
    assert [isinstance(r, PermanentSendError) for r in results] == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert results[0] == "bulk-user1@example.org"


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Your {{code}} inside"},
        {"source_html": "<p>Literal {{ braces }} in the content</p>"},
        {"source_html": "<p>Closing }} only</p>"},
        {"source_html": "<p>Entity &#123;&#123;braces&#125;&#125;</p>"},
    ],
    ids=["subject", "html", "closing", "entity-in-text"],
)
async def test_content_that_ses_substitution_could_alter_goes_by_send_email(
    changes: dict[str, Any],
) -> None:
    emails = [email(n, **changes) for n in range(1, 4)]
    client = RecordingClient()
    results = await backend_for(client).send_batch(emails)
    assert client.bulks == []
    assert sorted(r["Destination"]["ToAddresses"][0] for r in client.singles) == sorted(
        e.recipient for e in emails
    )
    for mail in emails:
        (request,) = [
            r for r in client.singles if r["Destination"]["ToAddresses"] == [mail.recipient]
        ]
        assert request == dict(build_send_email_request(mail))  # exactly as given
    assert results == [f"single-{e.recipient}" for e in emails]


async def test_a_group_of_one_and_single_mode_use_send_email() -> None:
    client = RecordingClient()
    lone = email(1, source_html="<p>only me</p>")
    emails = [lone, email(2), email(3)]
    results = await backend_for(client).send_batch(emails)
    assert [r["Destination"]["ToAddresses"] for r in client.singles] == [[lone.recipient]]
    assert [recipients_of(r) for r in client.bulks] == [[emails[1].recipient, emails[2].recipient]]
    assert results[0] == f"single-{lone.recipient}"

    single = RecordingClient()
    results = await backend_for(single, SesSendMode.SINGLE).send_batch(emails)
    assert single.bulks == []
    assert len(single.singles) == 3
    assert results == [f"single-{e.recipient}" for e in emails]


async def test_an_email_ses_would_refuse_fails_before_the_call_and_leaves_it() -> None:
    client = RecordingClient()
    bad = email(2, recipient="not an address")
    emails = [email(1), bad, email(3)]
    results = await backend_for(client).send_batch(emails)
    assert isinstance(results[1], PermanentSendError)
    assert [recipients_of(r) for r in client.bulks] == [["user1@example.org", "user3@example.org"]]
    assert results[0] == "bulk-user1@example.org"


async def test_a_timed_out_bulk_call_retries_every_entry() -> None:
    client = RecordingClient()
    client.error = ReadTimeoutError(endpoint_url="http://127.0.0.1:9")
    results = await backend_for(client).send_batch([email(n) for n in range(1, 4)])
    assert all(isinstance(r, TransientSendError) for r in results)


async def test_no_pixel_keeps_the_html_as_given() -> None:
    client = RecordingClient()
    emails = [email(n, pixel=False) for n in range(1, 3)]
    await backend_for(client).send_batch(emails)
    (request,) = client.bulks
    assert request["DefaultContent"]["Template"]["TemplateContent"]["Html"] == SOURCE_HTML


# ---------------------------------------------------------------------------------------------
# Merge fields: SES's output equals what SendEmail of the rendered email would carry

MERGE_SUBJECT = "Hello {{ first_name }}, your {{plan}} plan"
MERGE_HTML = (
    "<html><body><p>Dear {{ first_name }},</p><p>Plan: <b>{{plan}}</b></p>"
    '<p><a href="{{unsubscribe_url}}">Unsubscribe</a> ({{email}})</p></body></html>'
)


def as_ses_would_render(request: dict[str, Any], recipient: str) -> tuple[str, str, str | None]:
    content = request["DefaultContent"]["Template"]["TemplateContent"]
    (entry,) = [
        e for e in request["BulkEmailEntries"] if e["Destination"]["ToAddresses"] == [recipient]
    ]
    data = json.loads(
        entry["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]
    )
    text = content.get("Text")
    return (
        ses_substitute(content["Subject"], data),
        ses_substitute(content["Html"], data),
        None if text is None else ses_substitute(text, data),
    )


@pytest.mark.parametrize(
    "values",
    [
        [{"first_name": "Ada", "plan": "pro"}, {"first_name": "Grace Hopper", "plan": "pro"}],
        [{"first_name": "<script>", "plan": "pro"}, {"first_name": "Tom & Jerry", "plan": "x"}],
        [{"first_name": "O'Brien", "plan": '"quoted"'}, {"first_name": "{{plan}}", "plan": "p"}],
        [{"first_name": " padded ", "plan": "a  b\t"}, {"first_name": "", "plan": "a=b`c"}],
        [{"first_name": "x" * 1000, "plan": "pro"}, {"first_name": "Zoë", "plan": "ünï"}],
    ],
    ids=["plain", "markup", "quotes-braces", "whitespace-empty", "long-unicode"],
)
async def test_merge_emails_read_the_same_through_bulk_and_single(
    values: list[dict[str, str]],
) -> None:
    emails = [
        merged_email(n, MERGE_SUBJECT, MERGE_HTML, data) for n, data in enumerate(values * 3, 1)
    ]
    client = RecordingClient()
    results = await backend_for(client).send_batch(emails)
    assert len(results) == len(emails)
    assert all(isinstance(r, str) for r in results)
    for mail in emails:
        single = build_send_email_request(mail)["Content"]["Simple"]
        expected = (
            single["Subject"]["Data"],
            single["Body"]["Html"]["Data"],
            single["Body"].get("Text", {}).get("Data"),
        )
        bulk = [r for r in client.bulks if mail.recipient in recipients_of(r)]
        if bulk:
            assert as_ses_would_render(bulk[0], mail.recipient) == expected
        else:
            assert [mail.recipient] in [r["Destination"]["ToAddresses"] for r in client.singles]
    # Every ordinary value (and the URLs' and pixel's tokens) went through bulk calls.
    if values[0]["first_name"] == "Ada":
        assert client.singles == []


@pytest.mark.parametrize(
    "html",
    [
        '<p title="{{first_name}}">x</p>',
        '<p><a href="https://example.com">{{first_name}}</a></p>',
        "<p>&no{{first_name}}</p>",
        "<p>{{{first_name}}}</p>",
        "<p>\\{{first_name}}</p>",
        "<p>{{first_name}} and {{ #if x }}</p>",
        "<p title=a{{first_name}}>x</p>",
        '<a href="https://example.com/{{first_name}}">https://example.com/Ada</a>',
        '<a href="mailto:{{first_name}}@example.com">Ada@example.com</a>',
    ],
    ids=[
        "attribute",
        "link-text",
        "char-reference",
        "triple",
        "backslash",
        "helper",
        "unquoted-attribute",
        "link-text-could-equal-target",
        "mailto-text-could-equal-target",
    ],
)
async def test_placeholders_ses_could_read_differently_go_by_send_email(html: str) -> None:
    emails = [merged_email(n, "Hi", html, {"first_name": "Ada", "x": "y"}) for n in (1, 2)]
    client = RecordingClient()
    await backend_for(client).send_batch(emails)
    assert client.bulks == []
    assert len(client.singles) == 2


async def test_a_renderer_that_escapes_otherwise_is_never_second_guessed() -> None:
    """The prefix written into the template is checked against what was actually rendered:
    a renderer that leaves quotes alone sends those emails with SendEmail, as rendered."""
    emails = []
    for n in (1, 2, 3):
        mail = merged_email(n, "Hi", "<p>Dear {{name}}</p>", {"name": "O'Brien"})
        source = "<p>Dear O'Brien</p>"  # quote not escaped by this renderer
        emails.append(
            OutgoingEmail(
                **{
                    **{f: getattr(mail, f) for f in OutgoingEmail.__slots__},
                    "source_html": source,
                    "html": insert_pixel(source, pixel_url(n)),
                }
            )
        )
    client = RecordingClient()
    await backend_for(client).send_batch(emails)
    assert client.bulks == []
    assert sorted(r["Content"]["Simple"]["Body"]["Html"]["Data"] for r in client.singles) == [
        e.html for e in emails
    ]


async def test_placeholders_in_quoted_attributes_after_literal_text_go_in_bulk() -> None:
    html = (
        '<p><img alt="logo" src="https://cdn.example.com/{{first_name}}.png"></p>'
        '<p><a href="https://example.com/u/{{first_name}}">Your page</a></p>'
    )
    emails = [
        merged_email(n, "Hi", html, {"first_name": name})
        for n, name in enumerate(["Ada", "Grace", "Edsger"], 1)
    ]
    client = RecordingClient()
    await backend_for(client).send_batch(emails)
    assert client.singles == []
    (request,) = client.bulks
    for mail in emails:
        single = build_send_email_request(mail)["Content"]["Simple"]
        assert as_ses_would_render(request, mail.recipient) == (
            single["Subject"]["Data"],
            single["Body"]["Html"]["Data"],
            single["Body"].get("Text", {}).get("Data"),
        )


FRAGMENTS = [
    "<p>",
    "</p>",
    "<b>",
    "</b>",
    "<br>",
    "<li>",
    "<td>",
    "<div>",
    "</div>",
    '<a href="https://example.com/{{a}}">',
    '<a href="mailto:{{b}}">',
    "<a href='#top'>",
    "</a>",
    '<img alt="{{a}}" src="x.png">',
    "<title>{{b}}</title>",
    "<style>p{color:red}</style>",
    "{{a}}",
    "{{ b }}",
    "{{a}}{{b}}",
    "Hello ",
    " world",
    "  ",
    "\n",
    "&amp;",
    "&",
    "&#123;",
    ";",
    "x",
    "{",
    "}",
]


@given(
    fragments=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12),
    values=st.lists(
        st.fixed_dictionaries(
            {
                "a": st.text(alphabet=st.sampled_from("Ab1 &<>\"'=`{}\\\n.:/#-"), max_size=8),
                "b": st.sampled_from(["Ada", "Ada Lovelace", "x@example.org", "", " s", "a&b"]),
            }
        ),
        min_size=2,
        max_size=4,
    ),
)
@settings(max_examples=300, deadline=None)
def test_merge_output_is_the_same_through_bulk_and_single_for_any_template(
    fragments: list[str], values: list[dict[str, str]]
) -> None:
    """Whatever the template and values: an email SES would render differently from sesender
    is never put in a bulk call."""
    html = "<html><body>" + "".join(fragments) + "</body></html>"
    emails = [merged_email(n, "Hi {{b}}", html, data) for n, data in enumerate(values, 1)]
    client = RecordingClient()
    results = trio.run(backend_for(client).send_batch, emails)
    assert all(isinstance(r, str) for r in results)
    event("some went in bulk" if client.bulks else "all alone")
    for mail in emails:
        bulk = [r for r in client.bulks if mail.recipient in recipients_of(r)]
        if not bulk:
            continue
        single = build_send_email_request(mail)["Content"]["Simple"]
        assert as_ses_would_render(bulk[0], mail.recipient) == (
            single["Subject"]["Data"],
            single["Body"]["Html"]["Data"],
            single["Body"].get("Text", {}).get("Data"),
        )


@given(fragments=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_plain_content_is_the_same_through_bulk_and_single_for_any_html(
    fragments: list[str],
) -> None:
    """Content without merge fields, braces and all, reads the same whichever call sent it."""
    html = "<html><body>" + "".join(fragments) + "</body></html>"
    emails = [email(n, source_html=html) for n in (1, 2, 3)]
    client = RecordingClient()
    trio.run(backend_for(client).send_batch, emails)
    event("bulk" if client.bulks else "alone")
    for mail in emails:
        bulk = [r for r in client.bulks if mail.recipient in recipients_of(r)]
        if bulk:
            single = build_send_email_request(mail)["Content"]["Simple"]
            assert as_ses_would_render(bulk[0], mail.recipient) == (
                single["Subject"]["Data"],
                single["Body"]["Html"]["Data"],
                single["Body"].get("Text", {}).get("Data"),
            )


# -- issue 20: the texts of failed entries (mutation testing found them unchecked) -----------------


@pytest.mark.parametrize(
    ("entry", "text", "code"),
    [
        ({}, "SES no status", ""),
        ({"Status": "FAILED"}, "SES FAILED", "FAILED"),
        ({"Error": "lost"}, "SES no status: lost", ""),
        ({"Status": "MESSAGE_REJECTED", "Error": "TAX"}, "SES MESSAGE_REJECTED: TAX", None),
        ({"Status": "SUCCESS"}, "SES SUCCESS", "SUCCESS"),  # no MessageId: not a success
    ],
)
def test_a_failed_entry_says_what_ses_said(
    entry: dict[str, str], text: str, code: str | None
) -> None:
    result = entry_result(entry)  # type: ignore[arg-type]
    assert isinstance(result, SendError)
    assert str(result) == text
    assert result.code == (entry.get("Status", "") if code is None else code)


# -- issue 20: the bulk engine's outcome mapping, found unchecked by mutation testing -------------


class BlockingClient(RecordingClient):
    """A recording client whose bulk calls wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = 0
        self.release = threading.Event()

    def send_bulk_email(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            self.entered += 1
        assert self.release.wait(10), "the test never released the call"
        return super().send_bulk_email(**request)


async def test_each_running_bulk_call_is_one_call_in_flight() -> None:
    client = BlockingClient()
    backend = backend_for(client)
    emails = [email(n, source_html=SOURCE_HTML if n % 2 else "<p>Other</p>") for n in range(1, 7)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.send_batch, emails)

        async def both_entered() -> bool:
            return client.entered == 2

        await wait_until(both_entered, timeout=10, interval=0.01)
        assert backend.statistics().in_flight == 2  # two calls, whatever each carries
        client.release.set()
    stats = backend.statistics()
    assert stats.in_flight == 0
    assert (stats.attempts, stats.bulk_calls, stats.bulk_emails, stats.sent) == (2, 2, 6, 6)
    assert len(client.bulks) == 2


async def test_a_whole_bulk_call_refused_for_its_unverified_sender_fails_as_the_senders() -> None:
    """SES names the identity that failed the check; when it is the call's sender, every entry
    fails as the sender's (retryable once verified), not as a permanent fault of each email."""
    client = RecordingClient()
    client.error = client_error("MessageRejected", 400, UNVERIFIED_SENDER)
    results = await backend_for(client).send_batch([email(n) for n in range(1, 4)])
    assert [type(result) for result in results] == [SenderSendError] * 3


UNVERIFIED_SENDER = (
    "Email address is not verified. The following identities failed the check in region"
    " US-EAST-1: news@example.com"
)


class ShortAnsweringClient(RecordingClient):
    """Answers only the first ``answered`` entries of a bulk call, each as ``status``."""

    def __init__(self, answered: int, status: str = "SUCCESS", error: str = "") -> None:
        super().__init__()
        self.answered = answered
        self.status = status
        self.error_text = error

    def send_bulk_email(self, **request: Any) -> dict[str, Any]:
        super().send_bulk_email(**request)
        entries = request["BulkEmailEntries"][: self.answered]
        return {
            "BulkEmailEntryResults": [
                {"Status": "SUCCESS", "MessageId": f"bulk-{n}"}
                if self.status == "SUCCESS"
                else {"Status": self.status, "Error": self.error_text}
                for n, _ in enumerate(entries)
            ]
        }


async def test_an_entry_ses_did_not_answer_is_retried_and_the_answered_ones_keep_theirs() -> None:
    results = await backend_for(ShortAnsweringClient(answered=2)).send_batch(
        [email(n) for n in range(1, 5)]
    )
    assert results[:2] == ["bulk-0", "bulk-1"]
    for missing in results[2:]:
        assert isinstance(missing, TransientSendError)
        assert missing.code == "MissingEntryResult"
        assert str(missing) == "SES answered no result for this bulk entry"


async def test_an_entry_refused_for_the_calls_unverified_sender_fails_as_the_senders() -> None:
    client = ShortAnsweringClient(answered=3, status="MESSAGE_REJECTED", error=UNVERIFIED_SENDER)
    results = await backend_for(client).send_batch([email(n) for n in range(1, 4)])
    assert [type(result) for result in results] == [SenderSendError] * 3


async def test_a_group_whose_every_email_ses_would_refuse_makes_no_call() -> None:
    client = RecordingClient()
    emails = [email(n, recipient=f"bad address {n}") for n in range(1, 4)]
    backend = backend_for(client)
    results = await backend.send_batch(emails)
    assert client.bulks == []
    assert client.singles == []
    assert [type(result) for result in results] == [PermanentSendError] * 3
    assert (backend.statistics().attempts, backend.statistics().permanent) == (0, 3)


def shaped_group(count: int) -> tuple[Any, Any, list[OutgoingEmail], list[dict[str, str]]]:
    """(key, template, emails, data) of ``count`` emails of one content."""
    emails = [email(n) for n in range(1, count + 1)]
    shaped = [bulk_key(e) for e in emails]
    key = shaped[0][0] if shaped[0] else None
    assert key is not None
    template = bulk_template(key)
    assert template is not None
    return key, template, emails, [s[1] for s in shaped if s is not None]


@pytest.mark.parametrize("count", [0, 1, 2])
def test_a_request_carries_one_entry_per_email_from_the_groups_sender(count: int) -> None:
    key, template, emails, data = shaped_group(max(count, 1))
    request = build_bulk_request(key, template, emails[:count], data[:count])
    assert recipients_of(dict(request)) == [e.recipient for e in emails[:count]]
    assert request["FromEmailAddress"] == ("Shop <news@example.com>" if count else "")
    # Every entry brings its own data; the template's default data is an empty JSON object.
    assert json.loads(request["DefaultContent"]["Template"]["TemplateData"]) == {}


def test_a_groups_reply_to_is_the_calls_in_ascii_and_an_unusable_one_is_named() -> None:
    emails = [replace(email(n), reply_to="Help <help@bücher.example>") for n in (1, 2)]
    shaped = [bulk_key(e) for e in emails]
    key = shaped[0][0] if shaped[0] else None
    assert key is not None
    template = bulk_template(key)
    assert template is not None
    request = build_bulk_request(key, template, emails, [s[1] for s in shaped if s])
    assert request["ReplyToAddresses"] == ["Help <help@xn--bcher-kva.example>"]
    validate("SendBulkEmail", dict(request))
    with pytest.raises(PermanentSendError, match=r"^reply-to "):
        build_bulk_request(replace(key, reply_to="a@x.example, b@y.example"), template, [], [])


def test_an_email_without_its_own_data_is_refused_not_dropped() -> None:
    key, template, emails, data = shaped_group(3)
    with pytest.raises(ValueError, match="zip"):
        build_bulk_request(key, template, emails, data[:2])


@pytest.mark.parametrize(("first", "second"), [(101, 0), (150, 3), (51, 49)])
async def test_every_email_goes_in_exactly_one_call_of_one_content_and_at_most_50(
    first: int, second: int
) -> None:
    """However many emails of however many contents: each is in exactly one call (its own
    result in its own place), no call has more than 50 entries or mixes contents."""
    emails = [email(n) for n in range(1, first + 1)] + [
        email(n, source_html="<p>Another</p>") for n in range(1000, 1000 + second)
    ]
    client = RecordingClient()
    results = await backend_for(client).send_batch(emails)
    assert results == [f"bulk-{e.recipient}" for e in emails]
    assert client.singles == []
    carried = [r for request in client.bulks for r in recipients_of(request)]
    assert sorted(carried) == sorted(e.recipient for e in emails)
    for request in client.bulks:
        assert len(request["BulkEmailEntries"]) <= MAX_BULK_ENTRIES
        html = request["DefaultContent"]["Template"]["TemplateContent"]["Html"]
        for recipient in recipients_of(request):
            assert ("Another" in html) == (int(recipient[4:].split("@")[0]) >= 1000)


async def test_an_email_sent_alone_that_ses_refuses_has_its_refusal_as_result() -> None:
    class RefusingClient(RecordingClient):
        def send_email(self, **request: Any) -> dict[str, Any]:
            raise client_error("MessageRejected", 400, "Address on the suppression list")

    client = RefusingClient()
    results = await backend_for(client).send_batch([email(1, source_html="<p>alone</p>")])
    (result,) = results
    assert isinstance(result, PermanentSendError)
    assert result.code == "MessageRejected"


@pytest.mark.parametrize(
    "change",
    [
        {"sender": "Other <other@example.com>"},
        {"headers": (("List-Unsubscribe", "<https://x.example/u>"),)},
        {"tags": (("campaign", "spring"),)},
        {"reply_to": "help@example.com"},
        {"configuration_set": "transactional"},
    ],
    ids=["sender", "header-names", "tag-names", "reply-to", "configuration-set"],
)
def test_emails_share_a_call_only_with_the_same_call_wide_parts(change: dict[str, Any]) -> None:
    """Sender, reply-to and configuration set are one value per call, and the names of headers
    and tags must match: an email that differs in any of them is in another group."""
    first, second = email(1), email(2)
    assert key_of(first) == key_of(second)
    assert key_of(first) != key_of(replace(second, **change))


def key_of(mail: OutgoingEmail) -> Any:
    shaped = bulk_key(mail)
    assert shaped is not None
    return shaped[0]


@pytest.mark.parametrize(
    ("url", "shares"),
    [
        (f"{PUBLIC_URL}/v1/x/open?request_id=tok-1", True),
        (f"{PUBLIC_URL}/v1/{{x/open?request_id=tok-1", False),
        (f"{PUBLIC_URL}/v1/x}}/open?request_id=tok-1", False),
    ],
    ids=["no-brace", "opening", "closing"],
)
def test_a_pixel_url_with_a_brace_before_its_tail_goes_alone(url: str, shares: bool) -> None:
    """SES would read a brace written into the template's pixel URL."""
    braced = replace(email(1), pixel_url=url, html=insert_pixel(SOURCE_HTML, url))
    assert (bulk_key(braced) is not None) is shares


def test_html_that_is_not_its_source_with_the_pixel_or_as_is_goes_alone() -> None:
    """Without a pixel the HTML sent must be the source itself; otherwise the template (made
    from the source) would not be what the recipient is to see."""
    plain = email(1, pixel=False)
    assert bulk_key(plain) is not None
    assert bulk_key(replace(plain, html=plain.html + "<p>changed</p>")) is None
