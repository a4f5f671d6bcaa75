"""Merge fields end to end: the real service renders the same email whichever backend sends it.

One templated submission (hostile values included) goes to three services started as processes
with the same tracking secret and public URL: one writing ``.eml`` files (outbox), one calling
SES with ``SendEmail`` only (``SES_SEND_MODE=single`` against moto's server, read back over its
state API), one in bulk mode against ``bench.fake_ses``, which renders every bulk entry the way
SES documents simple substitution and keeps it. Fresh databases give the same request ids, so
the same recipient must get byte-for-byte the same subject and HTML (pixel and unsubscribe link
included) from all three, and the same text from outbox and bulk; the outbox's text part shows
the values as plain text. Values SES's substitution could render otherwise (HTML-special
characters at their end) must have gone through ``SendEmail``; values that share such a start
and end in plain text go in one bulk call, SES filling in only the plain end. (The memory
backend keeps what it sent in the process's memory only: nothing outside can read it, so it is
compared in process, in tests/unit/backends/test_merge_fields_backends.py.) The same service also
shows a plain message with braces going out exactly as given, refused recipients named with their
missing field, and idempotency covering the data; the CLI fills fields from a CSV's columns; and a
SIGKILL mid-send loses no recipient's values (outbox, and SES in bulk mode against the fake).
"""

from __future__ import annotations

import copy
import email
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from html import escape
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from sesender.tracking import TokenSigner
from tests.e2e.fake_ses_support import FakeSes, running_fake_ses
from tests.e2e.harness import ServiceProcess, outbox_files, wait_for, wait_topic
from tests.e2e.sns_support import SENDER, MotoSes
from tests.e2e.sns_support import moto_ses as start_moto_ses
from tests.e2e.test_client_cli import sesender

PUBLIC_URL = "https://sesender.example.test"
TRACKING_SECRET = "e2e-merge-fields-tracking-secret"
LONG = "Smith & Jones " + "\u0141" * 986
HOSTILE = "<script>alert('x')</script> \"quoted\" & 'single' </p><img src=x onerror=alert(1)>"
SUBJECT = "Hello {{ first_name }} ({{plan}})"
CONTENT = (
    '<html><body><p title="{{first_name}}">Dear {{ first_name }},</p>'
    "<p>Your plan: {{plan}}. Credits: {{credits}}. Beta: {{beta}}.</p>"
    '<p>Sent to {{email}}. <a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>'
)
RECIPIENTS: list[Any] = [
    {"email": "ada@example.org", "data": {"first_name": "Ada", "plan": "pro", "credits": 12}},
    {"email": "bob@example.org", "data": {"first_name": HOSTILE, "beta": False}},
    {"email": "cy@example.org", "data": {"first_name": "Cy\u00e9 \U0001f600", "credits": 2.5}},
    "dee@example.org",
    {"email": "eve@example.org", "data": {"first_name": "Eve\r\nBcc: x@example.org"}},
    {"email": "fay@example.org", "data": {"first_name": ["nested"]}},
    # Same HTML-special start, plain ends (one of them 1,000 characters): one bulk call.
    {"email": "gil@example.org", "data": {"first_name": "Smith & Jones 1", "credits": LONG}},
    {
        "email": "hal@example.org",
        "data": {"first_name": "Smith & Jones 2", "plan": "pro", "credits": "Smith & Jones 3"},
    },
]
DEFAULTS = {"first_name": "friend", "plan": "free", "credits": 0, "beta": True}
EXPECTED_VALUES = {
    "ada@example.org": {"first_name": "Ada", "plan": "pro", "credits": "12", "beta": "true"},
    "bob@example.org": {"first_name": HOSTILE, "plan": "free", "credits": "0", "beta": "false"},
    "cy@example.org": {"first_name": "Cy\u00e9 \U0001f600", "plan": "free", "credits": "2.5",
                       "beta": "true"},
    "dee@example.org": {"first_name": "friend", "plan": "free", "credits": "0", "beta": "true"},
    "gil@example.org": {"first_name": "Smith & Jones 1", "plan": "free", "credits": LONG,
                        "beta": "true"},
    "hal@example.org": {"first_name": "Smith & Jones 2", "plan": "pro",
                        "credits": "Smith & Jones 3", "beta": "true"},
}  # fmt: skip
#: Whose values end in characters SES might escape otherwise: SendEmail, never a bulk entry.
SENT_ALONE = {"bob@example.org"}
#: Whose values share a start and end in plain text: SES fills in the ends of one bulk call.
SENT_IN_BULK = {"gil@example.org", "hal@example.org"}
SIGNER = TokenSigner(TRACKING_SECRET.encode())


@pytest.fixture
def moto_ses() -> Iterator[MotoSes]:
    with start_moto_ses(identity=SENDER.split("@")[1]) as server:
        yield server


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with running_fake_ses() as fake:
        yield fake


def body() -> dict[str, Any]:
    """A fresh copy of the submission (tests change it)."""
    return copy.deepcopy(
        {
            "messages": [
                {
                    "topic_id": "merge",
                    "emails": RECIPIENTS,
                    "data": DEFAULTS,
                    "subject": SUBJECT,
                    "content": CONTENT,
                }
            ]
        }
    )


def submit_template(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/messages", json=body(), headers={"Idempotency-Key": "merge-1"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def expected_html(address: str, request_id: int) -> str:
    """The HTML sesender must send: values escaped, its own links, the pixel before </body>."""
    values = EXPECTED_VALUES[address]
    unsubscribe = f"{PUBLIC_URL}/v1/unsubscribe?token={SIGNER.sign('unsubscribe', request_id)}"
    pixel = f"{PUBLIC_URL}/v1/events/open?request_id={SIGNER.sign('open', request_id)}"
    html = (
        f'<html><body><p title="{escape(values["first_name"])}">'
        f"Dear {escape(values['first_name'])},</p>"
        f"<p>Your plan: {escape(values['plan'])}. Credits: {escape(values['credits'])}."
        f" Beta: {values['beta']}.</p>"
        f'<p>Sent to {address}. <a href="{escape(unsubscribe)}">Unsubscribe</a></p>'
    )
    image = (
        f'<img src="{escape(pixel)}" width="1" height="1" alt="" style="display:none;border:0" />'
    )
    return html + image + "</body></html>"


def read_outbox(directory: Path) -> dict[str, EmailMessage]:
    messages: dict[str, EmailMessage] = {}
    for path in outbox_files(directory):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        messages[str(message["To"])] = message
    return messages


def part(message: EmailMessage, subtype: str) -> str:
    found = message.get_body(preferencelist=(subtype,))
    assert found is not None, f"no text/{subtype} part"
    content = found.get_content()
    assert isinstance(content, str)
    return content


def test_outbox_and_ses_send_the_same_rendered_email_and_refuse_the_same_recipients(
    start_service: Callable[..., ServiceProcess],
    moto_ses: MotoSes,
    fake_ses: FakeSes,
    tmp_path: Path,
) -> None:
    common = {"TRACKING_SECRET": TRACKING_SECRET, "UNSUBSCRIBE_ENABLED": "true"}
    outbox = start_service(
        SENDER_BACKEND="outbox",
        SERVER_URL=PUBLIC_URL,
        DATABASE_PATH=str(tmp_path / "outbox.db"),
        OUTBOX_DIR=str(tmp_path / "outbox"),
        AWS_SES_FROM_EMAIL=SENDER,
        **common,
    )
    ses = start_service(**moto_ses.service_env(DATABASE_PATH=str(tmp_path / "ses.db"), **common))
    bulk = start_service(**fake_ses.service_env(DATABASE_PATH=str(tmp_path / "bulk.db"), **common))
    accepted = len(EXPECTED_VALUES)
    answers = []
    for service in (outbox, ses, bulk):
        with service.client() as client:
            answer = submit_template(client)
            assert (answer["total"], answer["success"], answer["errors"]) == (
                accepted + 2,
                accepted,
                2,
            ), answer["rejected"]
            answers.append(answer)
            wait_topic(client, "merge", count=accepted, timeout=60)
    for answer in answers:
        reasons = {item["email"]: item["reason"] for item in answer["rejected"]}
        assert reasons == {
            "eve@example.org": "data.first_name is used in the subject and holds a line break",
            "fay@example.org": "data.first_name must be a string, number or boolean, not an array",
        }
    assert [answer["first_request_id"] for answer in answers] == [1, 1, 1]
    ids = {address: n for n, address in enumerate(EXPECTED_VALUES, start=1)}

    written = read_outbox(tmp_path / "outbox")
    recorded = {m["destinations"]["ToAddresses"][0]: m for m in moto_ses.messages()}
    rendered = {m["to"]: m for m in fake_ses.messages()}
    assert len(rendered) == accepted  # each once
    assert set(written) == set(recorded) == set(rendered) == set(EXPECTED_VALUES)
    for address, values in EXPECTED_VALUES.items():
        subject = f"Hello {values['first_name']} ({values['plan']})"
        html = expected_html(address, ids[address])
        assert str(written[address]["Subject"]) == recorded[address]["subject"] == subject
        assert rendered[address]["subject"] == subject
        assert part(written[address], "html").rstrip("\r\n") == html
        assert recorded[address]["body"] == html
        assert rendered[address]["html"] == html
        text = part(written[address], "plain")
        assert f"Dear {' '.join(values['first_name'].split())}," in text
        assert f"Sent to {address}." in text
        assert rendered[address]["text"] == text.replace("\r\n", "\n").rstrip("\n")
    # Bulk mode sent through SendEmail exactly what SES could render otherwise.
    assert {a for a, m in rendered.items() if not m["bulk"]} >= SENT_ALONE
    assert {a for a, m in rendered.items() if m["bulk"]} >= SENT_IN_BULK
    stats = fake_ses.get("/_bench/stats")
    assert stats["send_bulk_email"] >= 1
    assert stats["bulk_entries"] + stats["send_email"] == accepted
    # The hostile value is text in the HTML, never markup.
    assert "<script>" not in recorded["bob@example.org"]["body"]
    assert "&lt;script&gt;" in recorded["bob@example.org"]["body"]

    with outbox.client() as client:
        # The same key with other data is another body: refused, nothing stored.
        changed = body()
        changed["messages"][0]["emails"][0]["data"]["plan"] = "enterprise"
        response = client.post("/v1/messages", json=changed, headers={"Idempotency-Key": "merge-1"})
        assert response.status_code == 409, response.text
        replay = client.post("/v1/messages", json=body(), headers={"Idempotency-Key": "merge-1"})
        assert replay.status_code == 200
        assert replay.headers["Idempotent-Replayed"] == "true"


def test_a_message_without_data_is_sent_exactly_as_given_braces_included(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(SENDER_BACKEND="outbox", OPEN_TRACKING_ENABLED="false")
    content = "<html><body><p>{{ first_name }} {{email}} {{unsubscribe_url}} {{}}</p></body></html>"
    with service.client() as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {
                        "topic_id": "plain",
                        "emails": ["ada@example.org"],
                        "subject": "Hi {{first_name}}",
                        "content": content,
                    }
                ]
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["success"] == 1
        wait_topic(client, "plain", count=1, timeout=30)
    (message,) = read_outbox(tmp_path / "outbox").values()
    assert str(message["Subject"]) == "Hi {{first_name}}"
    assert part(message, "html").rstrip("\r\n") == content


def test_unsubscribe_url_is_refused_while_unsubscribe_is_disabled(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(SENDER_BACKEND="outbox", UNSUBSCRIBE_ENABLED="false")
    with service.client() as client:
        response = client.post("/v1/messages", json=body())
        assert response.status_code == 400
        assert re.search(r"\{\{unsubscribe_url\}\}.*UNSUBSCRIBE_ENABLED", response.json()["error"])
        assert client.get("/v1/topics/merge").json()["request_counts"] == {}


def test_the_cli_fills_fields_from_csv_columns(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(SENDER_BACKEND="outbox", OPEN_TRACKING_ENABLED="false")
    work = tmp_path / "cli"
    work.mkdir()
    html = work / "mail.html"
    html.write_text("<p>Dear {{ first_name }}, {{ city }} &amp; {{email}}</p>", encoding="utf-8")
    people = work / "people.csv"
    people.write_text(
        "First_Name,E-mail,city,ignored\n"  # "First_Name" is not "first_name": a usage error
        "Ada,ada@example.org,London,x\n",
        encoding="utf-8",
    )
    connection = ["--url", service.url, "--api-key", service.api_key]
    argv = ["send", *connection, "--topic", "cli-merge", "--html", str(html), "--no-follow"]
    argv += ["--subject", "Hi {{first_name}}", "--recipients", str(people)]
    refused = sesender(*argv, cwd=work)
    assert refused.returncode == 2
    assert "uses {{first_name}}, but recipients file" in refused.stderr
    people.write_text(
        "first_name,E-mail,city,ignored\n"
        "Ada,ada@example.org,<London>,x\n"
        "Bob,bob@example.org\n"  # no city: the server refuses it by the field's name
        "Cy,cy@example.org,Paris,y\n",
        encoding="utf-8",
    )
    result = sesender(*argv, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "3 recipients in 1 request: 2 accepted, 1 rejected" in result.stdout
    assert "bob@example.org: no value for merge field city" in result.stdout
    with service.client() as client:
        wait_topic(client, "cli-merge", count=2, timeout=30)
    written = read_outbox(tmp_path / "outbox")
    assert sorted(written) == ["ada@example.org", "cy@example.org"]
    assert str(written["ada@example.org"]["Subject"]) == "Hi Ada"
    assert part(written["ada@example.org"], "html").rstrip("\r\n") == (
        "<p>Dear Ada, &lt;London&gt; &amp; ada@example.org</p>"
    )
    assert str(written["cy@example.org"]["Subject"]) == "Hi Cy"


class Delivery(Protocol):
    """Where a service's emails go, read back as (recipient, subject, HTML) per email sent."""

    def env(self, **overrides: str) -> dict[str, str]: ...

    def delivered(self) -> list[tuple[str, str, str]]: ...


@dataclass
class OutboxDelivery:
    directory: Path

    def env(self, **overrides: str) -> dict[str, str]:
        return {"SENDER_BACKEND": "outbox", **overrides}

    def delivered(self) -> list[tuple[str, str, str]]:
        found = []
        for path in outbox_files(self.directory):
            written = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            assert isinstance(written, EmailMessage)
            html = part(written, "html").rstrip("\r\n")
            found.append((str(written["To"]), str(written["Subject"]), html))
        return found


@dataclass
class SesBulkDelivery:
    fake: FakeSes

    def env(self, **overrides: str) -> dict[str, str]:
        return self.fake.service_env(**overrides)

    def delivered(self) -> list[tuple[str, str, str]]:
        return [(m["to"], m["subject"], m["html"]) for m in self.fake.messages()]


@pytest.fixture(params=["outbox", "ses-bulk"])
def delivery(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Delivery]:
    if request.param == "outbox":
        yield OutboxDelivery(tmp_path / "outbox")
        return
    with running_fake_ses("--latency-ms", "20") as fake:
        yield SesBulkDelivery(fake)
        assert fake.get("/_bench/stats")["send_bulk_email"] > 0, "no bulk call was made"


def test_a_sigkill_mid_send_renders_every_recipient_with_its_own_values_after_restart(
    start_service: Callable[..., ServiceProcess], delivery: Delivery
) -> None:
    """The values live in the database with each email: the emails a crash left claimed or queued
    are rendered after the restart exactly as they would have been before it."""
    count = 300
    service = start_service(**delivery.env(OPEN_TRACKING_ENABLED="false", MAX_SEND_PER_SECOND="50"))
    emails = [{"email": f"crash{n}@example.org", "data": {"n": n}} for n in range(count)]
    message = {
        "topic_id": "crash-merge",
        "emails": emails,
        "subject": "Number {{n}}",
        "content": "<p>{{ email }} has number {{n}}</p>",
    }
    with service.client() as client:
        response = client.post("/v1/messages", json={"messages": [message]})
        assert response.status_code == 200, response.text
        assert response.json()["success"] == count
    wait_for(lambda: len(delivery.delivered()) >= 30, timeout=30, what="30 emails delivered")
    service.signal(signal.SIGKILL)
    assert service.wait(timeout=10) == -signal.SIGKILL
    assert len(delivery.delivered()) < count, "everything was sent before the kill"

    restarted = start_service(
        **delivery.env(OPEN_TRACKING_ENABLED="false", MAX_SEND_PER_SECOND="1000")
    )
    with restarted.client() as client:
        wait_topic(client, "crash-merge", count=count, timeout=60)
    seen = set()
    # One email per recipient, and maybe a few twice (in flight at the kill).
    for address, subject, html in delivery.delivered():
        number = int(address.removeprefix("crash").removesuffix("@example.org"))
        assert subject == f"Number {number}"
        assert html == f"<p>{address} has number {number}</p>"
        seen.add(address)
    assert len(seen) == count
    assert restarted.stop() == 0
