"""A systematic hostile-input sweep against the real service process (issue 8, security tests).

SQL metacharacters, a 100 KB string, NUL, CR/LF (including ``\\rBcc:`` and ``\\nX-Injected:``
header-injection attempts), markup, unicode (RTL override, emoji, combining marks), a lone UTF-16
surrogate (JSON allows ``"\\ud800"``; on the wire of a URL it becomes the invalid UTF-8
``%ED%A0%80``) and invalid UTF-8 bytes go into every field the API reads: each field of
``POST /v1/messages`` (``topic_id``, ``emails[]``, ``subject``, ``content``, ``scheduled_at``, an
unknown property), the path parameters (topic ids, request ids, suppressed addresses), the query
parameters of every GET route, the ``X-API-KEY``, ``Idempotency-Key`` and
``x-amz-sns-message-type`` headers, the open-pixel and unsubscribe tokens (forged from real ones
too), the suppression ``reason`` and the fields of the SNS webhook body. Header values with CR,
LF, NUL or raw non-ASCII bytes, and raw bytes in the request target, go through a raw socket.

Each case asserts what the README's HTTP API and ``openapi.json`` promise, never what the code
happens to do: a status below 500 (the documented 4xx where the documents name one) with a JSON
error body; what was accepted reads back verbatim (``GET /v1/messages/{id}``, the topic listing and
statistics, the suppression list, or the ``.eml`` the outbox wrote: subject and HTML body); and
nothing else changed: a canary topic (three emails scheduled far ahead), a canary suppression and a
canary idempotency key stay as they were, ``%`` and ``_`` never act as wildcards, the total number
of stored emails is exactly the sum of what was accepted, and the suppression list holds exactly
what the sweep put there. Every ``.eml`` written has exactly the expected header set, with no
``Bcc`` or ``X-Injected`` anywhere. At the end, the service's JSON log has no error record and no
traceback, and the process stops cleanly (exit 0).

Two behaviours are asserted as they are documented elsewhere, not in the HTTP API: surrounding
white space of an address, CR/LF included, is trimmed before validation (a list read from a file;
tests/unit/http/test_submission.py), while CR/LF inside one makes it invalid; and an
address with a non-ASCII local part is refused at submission, as SES has no SMTPUTF8.

One service serves the module (outbox backend at 500 emails/s, one-click unsubscribe on so its
tokens are in the ``.eml`` files, results flushed every 20 ms so a forged pixel can be checked
against a real one right away).

Defects this sweep found (fixed):

- A lone surrogate in ``topic_id``, ``subject`` or ``content`` of ``POST /v1/messages``, or in the
  ``reason`` of ``PUT /v1/suppressions/{email}``, was a 500 (SQLite cannot encode it), whether
  sent as the JSON escape ``"\\ud800"`` or as the raw CESU-8 bytes ``ED A0 80`` (``json.loads``
  reads bytes with ``surrogatepass``); now a 400 (``sesender/http/submission.py``,
  ``sesender/http/suppressions.py``).
- A path that is not percent-encoded UTF-8 (``PUT /v1/suppressions/%ED%A0%80@example.com``)
  was decoded by hypercorn with U+FFFD replacements, and the address
  ``\\ufffd\\ufffd\\ufffd@example.com``, which the client never sent, was suppressed (200);
  every such path is now a 400 (``sesender/http/app.py``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from email_validator import EmailNotValidError, ValidatedEmail, validate_email

from tests.e2e.harness import ServiceProcess, base_env, wait_for

pytestmark = pytest.mark.e2e

# -- the hostile values --------------------------------------------------------------------------

LONG = "x" * 100_000
#: httpx refuses URLs over 64 KiB; a long value in a URL is this long (a raw-socket case sends
#: a 100 KB request target).
LONG_IN_URL = "x" * 60_000

HOSTILE: dict[str, str] = {
    "sql-drop": "'; DROP TABLE requests;--",
    "sql-drop-emails": "'; DROP TABLE emails;--",
    "sql-or": '" OR 1=1 --',
    "sql-union": "x' UNION SELECT email, reason FROM suppressions --",
    "percent": "%",
    "underscore": "_",
    "backslash": "\\",
    "canary-percent": "canary%",
    "canary-underscore": "canar_",
    "markup": '"><script>alert(1)</script>',
    "long-100k": LONG,
    "nul": "a\x00b",
    "crlf": "a\r\nb",
    "only-crlf": "\r\n",
    "cr-bcc": "a\rBcc: victim@example.org",
    "lf-injected": "a\nX-Injected: 1",
    "crlf-bcc": "a\r\nBcc: victim@example.org",
    "rtl-override": "\u202egnp.exe\u202c",
    "emoji": "\U0001f4e7\U0001f525\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "combining": "Z\u0351\u0364\u0310a\u0301\u0301\u0327",
    "lone-surrogate": "\ud800",
    "padded": "  padded  ",
}
HOSTILE_IDS = list(HOSTILE)

#: Bytes that make a JSON text invalid, as UTF-8 or as JSON, when put inside one of its strings.
#: (``json.loads`` decodes bytes with ``surrogatepass``: the CESU-8 form of a surrogate becomes
#: a lone surrogate rather than an error, so the handlers must refuse it themselves.)
BAD_BYTES: dict[str, bytes] = {
    "byte-ff": b"\xff",
    "latin-1": b"caf\xe9",
    "overlong-slash": b"\xc0\xaf",
    "encoded-surrogate": b"\xed\xa0\x80",
    "truncated-sequence": b"\xe2\x82",
    "raw-nul": b"\x00",
    "raw-line-feed": b"a\nb",
}
#: Whole bodies that are not JSON.
NOT_JSON: dict[str, bytes] = {"nul-first": b"\x00{}", "sql": b"'; DROP TABLE requests;--"}

CANARY_TOPIC = "canary"
CANARY_EMAILS = ("canary1@example.com", "canary2@example.com", "canary3@example.com")
CANARY_SUPPRESSION = "canary@example.com"
CANARY_IDEMPOTENCY_KEY = "canary"
API_KEY = "hostile-sweep-key"

STATUS_NAMES = ("Created", "Processed", "Sent", "Failed", "Stopped", "Suppressed", "Held")
#: Every header of an outgoing .eml: name (lower case) -> how many times.
EXPECTED_HEADERS = Counter(
    {
        "content-type": 1,
        "mime-version": 1,
        "from": 1,
        "to": 1,
        "subject": 1,
        "date": 1,
        "message-id": 1,
        "x-sesender-request-id": 1,
        "x-sesender-topic": 1,
        "list-unsubscribe": 1,
        "list-unsubscribe-post": 1,
    }
)
PART_HEADERS = {"content-type", "mime-version", "content-transfer-encoding"}
INJECTED = re.compile(rb"^(?:bcc|x-injected)\s*:", re.IGNORECASE | re.MULTILINE)
PIXEL = re.compile(r'<img src="([^"]+/v1/events/open\?request_id=[^"]+)"')
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_surrogate(value: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in value)


def url_value(value: str) -> str:
    """The value as it goes into a URL: percent-encoded UTF-8 (a lone surrogate as the invalid
    UTF-8 bytes ``%ED%A0%80``), a long one shortened to what httpx sends."""
    return quote(LONG_IN_URL if value == LONG else value, safe="", errors="surrogatepass")


def in_url(value: str) -> str:
    """The value the server can read back from :func:`url_value`."""
    return LONG_IN_URL if value == LONG else value


# -- the service and what must not change --------------------------------------------------------


@dataclass
class Tokens:
    request_id: int
    email: str
    open: str
    unsubscribe: str


@dataclass
class Sweep:
    service: ServiceProcess
    client: httpx.Client
    outbox: Path
    canary_ids: list[int]
    canary_details: list[dict[str, Any]]
    canary_suppression: dict[str, Any]
    canary_response: dict[str, Any]
    #: Emails stored so far (every accepted one, whatever happened to it since).
    stored: int = 0
    #: Addresses on the suppression list.
    suppressed: set[str] = field(default_factory=set)
    victim: Tokens | None = None
    witness: Tokens | None = None

    def json_post(
        self, path: str, document: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST JSON text; ``json.dumps`` escapes a lone surrogate as ``\\ud800`` (valid JSON)."""
        return self.client.post(
            path,
            content=json.dumps(document).encode("ascii"),
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def submit(self, message: dict[str, Any], **extra: Any) -> httpx.Response:
        response = self.json_post("/v1/messages", {"messages": [message], **extra})
        assert response.status_code < 500, response.text
        if response.status_code == 200:
            self.stored += response.json()["success"]
        return response


def topic_listing(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/topics", params={"limit": "200"})
    assert response.status_code == 200, response.text
    topics: list[dict[str, Any]] = response.json()["topics"]
    assert len(topics) < 200, "the sweep outgrew the listing it counts with"
    return topics


def suppression_list(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/suppressions", params={"limit": "1000"})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["suppressions"]
    return entries


def topic_stats(client: httpx.Client, topic_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/topics/{url_value(topic_id)}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def details(client: httpx.Client, request_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/messages/{request_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_nothing_else_changed(sweep: Sweep) -> None:
    """The canary topic's counts are intact, the email total is what was accepted, and the
    suppression list holds exactly what the sweep put there (two requests: it runs after every
    case; the canary emails themselves are compared whole at the end)."""
    client = sweep.client
    topics = topic_listing(client)
    (canary,) = [topic for topic in topics if topic["topic_id"] == CANARY_TOPIC]
    assert canary["request_counts"] == {
        name: 3 if name == "Created" else 0 for name in STATUS_NAMES
    }
    assert canary["result_counts"] == {"Delivery": 0, "Open": 0, "Bounce": 0, "Complaint": 0}
    assert sum(sum(topic["request_counts"].values()) for topic in topics) == sweep.stored
    entries = suppression_list(client)
    assert {entry["email"] for entry in entries} == sweep.suppressed
    (suppressed,) = [entry for entry in entries if entry["email"] == CANARY_SUPPRESSION]
    assert suppressed == sweep.canary_suppression


def assert_json_error(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str)
    assert body["error"]


# -- the outbox ----------------------------------------------------------------------------------


def eml_path(outbox: Path, request_id: int) -> Path | None:
    found = sorted(outbox.glob(f"{request_id}-*.eml"))
    return found[0] if found else None


def read_eml(outbox: Path, request_id: int) -> tuple[EmailMessage, bytes]:
    path = wait_for(
        lambda: eml_path(outbox, request_id),
        timeout=20,
        interval=0.01,
        what=f"{request_id}'s .eml",
    )
    raw = path.read_bytes()
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message, raw


def assert_no_injected_header(message: EmailMessage, raw: bytes, request_id: int) -> None:
    """Exactly the expected headers, once each; none injected, not even inside a MIME part."""
    assert Counter(name.lower() for name in message) == EXPECTED_HEADERS, message.keys()
    assert str(message["X-Sesender-Request-Id"]) == str(request_id)
    assert INJECTED.search(raw) is None, raw[:2000]
    for part in message.walk():
        if part is not message:
            assert {name.lower() for name in part} <= PART_HEADERS, part.keys()


def raw_header(raw: bytes, name: str) -> str:
    """The value of header ``name`` as written: after ``Name: ``, unfolded."""
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
    match = re.search(
        rf"^{name}: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE | re.IGNORECASE
    )
    assert match is not None, head
    return match.group(1).replace("\r\n", "")


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


def wait_final(client: httpx.Client, request_id: int) -> dict[str, Any]:
    detail: dict[str, Any] = wait_for(
        lambda: (found := details(client, request_id))["status"] in ("Sent", "Failed") and found,
        timeout=20,
        interval=0.01,
        what=f"email {request_id} to be sent",
    )
    return detail


def tokens_of(outbox: Path, request_id: int, email: str) -> Tokens:
    message, _ = read_eml(outbox, request_id)
    match = PIXEL.search(html_of(message))
    assert match is not None
    open_token = parse_qs(urlsplit(match.group(1).replace("&amp;", "&")).query)["request_id"][0]
    link = str(message["List-Unsubscribe"]).strip("<>")
    unsubscribe_token = parse_qs(urlsplit(link).query)["token"][0]
    return Tokens(request_id, email, open_token, unsubscribe_token)


# -- raw HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_exchange(url: str, request: bytes) -> RawResponse:
    """Send ``request`` as is; read one well-formed HTTP/1.1 response (by its Content-Length:
    the server may keep the connection open a while after answering, even to ``close``)."""
    address = urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=15) as connection:
        # Answered and closed before reading everything: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            assert chunk, f"connection closed without a complete response: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.1 ([1-5][0-9][0-9]) ?.*", status_line)
        assert match is not None, status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            assert colon, line
            assert name, line
            assert name == name.strip(), line
            headers[name.lower()] = value.strip()
        assert "transfer-encoding" not in headers, headers
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = connection.recv(65536)
            assert chunk, "connection closed in the middle of the body"
            body += chunk
    # Anything after it answers what followed a line break that ended the headers early.
    return RawResponse(int(match.group(1)), headers, body[:length])


def assert_raw_answer(response: RawResponse, *statuses: int) -> None:
    """A status below 500 (one of ``statuses`` when given). The server's own protocol errors
    (hypercorn's 400) have no body; the app's are JSON ``{"error": ...}``."""
    assert response.status < 500, response
    if statuses:
        assert response.status in statuses, response
    if response.status >= 400 and response.body:
        assert response.headers["content-type"] == "application/json", response
        assert list(json.loads(response.body)) == ["error"], response


def header_bytes(value: str) -> bytes:
    """A header value as bytes on the wire: UTF-8 (surrogates as their invalid UTF-8 bytes)."""
    return value.encode("utf-8", "surrogatepass")


# -- the fixture ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweep]:
    workdir = tmp_path_factory.mktemp("hostile")
    service = ServiceProcess(
        workdir,
        base_env(
            workdir,
            API_KEY=API_KEY,
            SENDER_BACKEND="outbox",
            MAX_SEND_PER_SECOND="500",
            UNSUBSCRIBE_ENABLED="true",
            SERVER_URL="https://mail.example.com",
            POST_FLUSH_SECONDS="0.02",
            HTTP_READ_TIMEOUT_SECONDS="5",
        ),
    )
    try:
        service.start()
        with service.client() as client:
            yield prepare(service, client)
            client.close()
            assert service.stop() == 0, "\n".join(service.raw_lines[-20:])
    finally:
        service.kill()


def prepare(service: ServiceProcess, client: httpx.Client) -> Sweep:
    outbox = Path(service.env["OUTBOX_DIR"])
    canary = client.post(
        "/v1/messages",
        json={
            "messages": [
                {
                    "topic_id": CANARY_TOPIC,
                    "emails": list(CANARY_EMAILS),
                    "subject": "Canary",
                    "content": "<p>canary</p>",
                }
            ],
            "scheduled_at": "2099-01-01 00:00:00",
        },
        headers={"Idempotency-Key": CANARY_IDEMPOTENCY_KEY},
    )
    assert canary.status_code == 200, canary.text
    first = canary.json()["first_request_id"]
    canary_ids = list(range(first, first + len(CANARY_EMAILS)))
    put = client.put(f"/v1/suppressions/{CANARY_SUPPRESSION}", json={"reason": "canary"})
    assert put.status_code == 200, put.text
    sweep = Sweep(
        service=service,
        client=client,
        outbox=outbox,
        canary_ids=canary_ids,
        canary_details=[details(client, request_id) for request_id in canary_ids],
        canary_suppression=put.json(),
        canary_response=canary.json(),
        stored=len(CANARY_EMAILS),
        suppressed={CANARY_SUPPRESSION},
    )
    # Two sent emails whose real tokens are forged (victim) or used as a barrier (witness).
    tokens = []
    for email in ("victim@example.com", "witness@example.com"):
        response = sweep.submit(
            {
                "topic_id": "sweep-tokens",
                "emails": [email],
                "subject": "Tokens",
                "content": "<html><body><p>Hi</p></body></html>",
            }
        )
        assert response.status_code == 200, response.text
        request_id = response.json()["first_request_id"]
        assert wait_final(client, request_id)["status"] == "Sent"
        tokens.append(tokens_of(outbox, request_id, email))
    sweep.victim, sweep.witness = tokens
    assert_nothing_else_changed(sweep)
    return sweep


# -- POST /v1/messages ---------------------------------------------------------------------------


def refused_as_topic_id(value: str) -> bool:
    """openapi.json: at most 256 characters, no control characters."""
    return len(value) > 256 or CONTROL.search(value) is not None


def refused_as_subject(value: str) -> bool:
    """The API: non-empty, no CR/LF; openapi.json: not blank, at most 998, no CR/LF/NUL."""
    return not value.strip() or len(value) > 998 or re.search(r"[\r\n\x00]", value) is not None


def refused_as_content(value: str) -> bool:
    """openapi.json: not blank, no NUL."""
    return not value.strip() or "\x00" in value


def message(**fields: Any) -> dict[str, Any]:
    return {
        "topic_id": "sweep",
        "emails": ["reader@example.com"],
        "subject": "Hello",
        "content": "<p>Hello</p>",
        **fields,
    }


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_topic_id(sweep: Sweep, name: str) -> None:
    """Refused with 400 when the documents say so; otherwise stored verbatim, addressable by
    its percent-encoded id, cancellable, and sent with no header injected."""
    value = HOSTILE[name]
    client = sweep.client
    now = sweep.submit(message(topic_id=value, emails=["topic-now@example.com"]))
    if refused_as_topic_id(value) or has_surrogate(value):
        # A lone surrogate: the documents do not say; it cannot be stored verbatim, so 400.
        assert_json_error(now, 400)
        later = sweep.submit(message(topic_id=value), scheduled_at="2099-01-01 00:00:00")
        assert_json_error(later, 400)
        assert_nothing_else_changed(sweep)
        return
    assert now.status_code == 200, now.text
    assert (now.json()["success"], now.json()["errors"]) == (1, 0)
    later = sweep.submit(
        message(topic_id=value, emails=["t1@example.com", "t2@example.com"]),
        scheduled_at="2099-01-01 00:00:00",
    )
    assert later.status_code == 200, later.text
    assert later.json()["scheduled"] is True

    first_now = now.json()["first_request_id"]
    first_later = later.json()["first_request_id"]
    for request_id in (first_now, first_later, first_later + 1):
        assert details(client, request_id)["topic_id"] == value
    listed = [topic for topic in topic_listing(client) if topic["topic_id"] == value]
    assert len(listed) == 1
    sent = wait_final(client, first_now)
    assert sent["status"] == "Sent", sent
    stats = topic_stats(client, value)
    assert stats["request_counts"] == {
        status: {"Created": 2, "Sent": 1}.get(status, 0) for status in STATUS_NAMES
    }
    eml, raw = read_eml(sweep.outbox, first_now)
    assert_no_injected_header(eml, raw, first_now)
    assert str(eml["X-Sesender-Topic"]) == value.lstrip()  # the parser drops leading space
    if value.isascii():  # written as is: byte for byte after the header name
        assert raw_header(raw, "X-Sesender-Topic") == value

    cancelled = client.delete(f"/v1/topics/{url_value(value)}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"status": "ok", "stopped": 2}
    after = topic_stats(client, value)["request_counts"]
    assert (after["Stopped"], after["Created"], after["Sent"]) == (2, 0, 1)
    assert_nothing_else_changed(sweep)


def sent_eml(
    sweep: Sweep, field: str, value: str, *, refused: bool
) -> tuple[EmailMessage, bytes] | None:
    """Submit a message whose ``field`` is ``value``. When it must be ``refused``: check the JSON
    400 that changed nothing and return None. Otherwise wait until it is Sent and return the
    ``.eml`` it became, already checked for injected headers."""
    response = sweep.submit(message(topic_id=f"sweep-{field}", **{field: value}))
    if refused:
        assert_json_error(response, 400)
        assert_nothing_else_changed(sweep)
        return None
    assert response.status_code == 200, response.text
    request_id = response.json()["first_request_id"]
    assert wait_final(sweep.client, request_id)["status"] == "Sent"
    eml, raw = read_eml(sweep.outbox, request_id)
    assert_no_injected_header(eml, raw, request_id)
    return eml, raw


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_subject(sweep: Sweep, name: str) -> None:
    value = HOSTILE[name]
    refused = refused_as_subject(value) or has_surrogate(value)
    sent = sent_eml(sweep, "subject", value, refused=refused)
    if sent is None:
        return
    eml, raw = sent
    assert str(eml["Subject"]) == value.lstrip()  # the parser drops leading white space
    if value.isascii():  # written as is: byte for byte after "Subject: "
        assert raw_header(raw, "Subject") == value
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_content(sweep: Sweep, name: str) -> None:
    value = HOSTILE[name]
    refused = refused_as_content(value) or has_surrogate(value)
    sent = sent_eml(sweep, "content", value, refused=refused)
    if sent is None:
        return
    eml, _raw = sent
    html = html_of(eml)
    # Verbatim, then the tracking pixel (appended: none of the values has a </body>).
    assert html[: len(value)] == value
    assert html[len(value) :].startswith('<img src="https://mail.example.com/v1/events/open?')
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_scheduled_at(sweep: Sweep, name: str) -> None:
    """None of the values is a time: 400 and nothing stored (the original sent at once)."""
    response = sweep.submit(message(topic_id="sweep-scheduled"), scheduled_at=HOSTILE[name])
    assert_json_error(response, 400)
    for prefix in ("2099-01-01 09:00:00", "2099-01-01T09:00:00+09:00"):
        if HOSTILE[name].strip():
            glued = sweep.submit(
                message(topic_id="sweep-scheduled"), scheduled_at=prefix + HOSTILE[name]
            )
            assert_json_error(glued, 400)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_unknown_property(sweep: Sweep, name: str) -> None:
    """An undocumented property (name and value hostile) is ignored: the email is sent as if it
    were not there, and it never reaches a header."""
    value = HOSTILE[name]
    response = sweep.submit(message(topic_id="sweep-extra", **{value: value, "headers": value}))
    assert response.status_code == 200, response.text
    request_id = response.json()["first_request_id"]
    assert wait_final(sweep.client, request_id)["status"] == "Sent"
    eml, raw = read_eml(sweep.outbox, request_id)
    assert_no_injected_header(eml, raw, request_id)
    assert str(eml["Subject"]) == "Hello"
    assert_nothing_else_changed(sweep)


ADDRESS_FORMS = {
    "local-part": "{}@example.com",
    "after-address": "ok@example.com{}",
    "display-name": "{} <ok@example.com>",
}


def library_check(address: str) -> ValidatedEmail | None:
    """email-validator's verdict (the documented authority: syntax and length, never DNS)."""
    try:
        # As sesender validates: no SMTPUTF8 (SES cannot send to a non-ASCII local part).
        return validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None


def library_normalised(address: str) -> str | None:
    checked = library_check(address)
    return None if checked is None else checked.normalized


@pytest.mark.parametrize("name", HOSTILE_IDS)
@pytest.mark.parametrize("form", list(ADDRESS_FORMS))
def test_recipient_address(sweep: Sweep, form: str, name: str) -> None:
    """An invalid address is counted in ``errors`` and listed (not a 400); a valid one is stored
    as email-validator normalises it and sent to exactly that address. Interior CR/LF (or any
    control character) is always invalid."""
    address = ADDRESS_FORMS[form].format(HOSTILE[name])
    response = sweep.submit(message(topic_id="sweep-emails", emails=[address]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["success"] + body["errors"]) == (1, 1)
    trimmed = address.strip()
    if body["errors"]:
        assert body["rejected"][0]["email"] == address[:320]
        assert body["rejected"][0]["reason"]
        assert "first_request_id" not in body
        assert_nothing_else_changed(sweep)
        return
    # Only surrounding white space may go (a list read from a file ends lines with CR/LF).
    assert CONTROL.search(trimmed) is None, "an address with a control character was accepted"
    checked = library_check(trimmed)
    assert checked is not None
    request_id = body["first_request_id"]
    detail = wait_final(sweep.client, request_id)
    assert detail["email"] == checked.normalized
    # The local part verbatim (NFC at most); the domain as IDNA maps it (lower case).
    local = trimmed.rpartition("@")[0]
    assert detail["email"].rpartition("@")[0] in (local, unicodedata.normalize("NFC", local))
    # A non-ASCII local part (which needs SMTPUTF8) was refused at submission: what is accepted
    # is sent.
    assert detail["status"] == "Sent", detail
    eml, raw = read_eml(sweep.outbox, request_id)
    assert_no_injected_header(eml, raw, request_id)
    assert str(eml["To"]) == checked.ascii_email
    assert_nothing_else_changed(sweep)


SUBMISSION_TEMPLATE = (
    b'{"messages": [{"topic_id": "TOPIC", "emails": ["EMAIL@example.com"], "subject": "SUBJECT",'
    b' "content": "CONTENT"}]}'
)
BODY_TARGETS: dict[str, tuple[str, str, bytes, bytes]] = {
    "messages-topic_id": ("POST", "/v1/messages", SUBMISSION_TEMPLATE, b"TOPIC"),
    "messages-subject": ("POST", "/v1/messages", SUBMISSION_TEMPLATE, b"SUBJECT"),
    "messages-content": ("POST", "/v1/messages", SUBMISSION_TEMPLATE, b"CONTENT"),
    "messages-emails": ("POST", "/v1/messages", SUBMISSION_TEMPLATE, b"EMAIL"),
    "suppression-reason": (
        "PUT",
        "/v1/suppressions/raw-body@example.com",
        b'{"reason": "REASON"}',
        b"REASON",
    ),
}


@pytest.mark.parametrize("name", list(BAD_BYTES))
@pytest.mark.parametrize("target", list(BODY_TARGETS))
def test_a_body_that_is_not_utf8_json(sweep: Sweep, target: str, name: str) -> None:
    """400 and nothing stored; an address is judged alone (counted in ``errors``, not stored)."""
    method, path, template, placeholder = BODY_TARGETS[target]
    body = template.replace(placeholder, BAD_BYTES[name])
    response = sweep.client.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    if target == "messages-emails" and response.status_code == 200:
        sweep.stored += response.json()["success"]
        assert (response.json()["success"], response.json()["errors"]) == (0, 1)
    else:
        assert_json_error(response, 400)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", list(NOT_JSON))
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/messages"), ("PUT", "/v1/suppressions/raw-body@example.com")],
)
def test_a_body_that_is_not_json(sweep: Sweep, method: str, path: str, name: str) -> None:
    response = sweep.client.request(
        method, path, content=NOT_JSON[name], headers={"Content-Type": "application/json"}
    )
    assert_json_error(response, 400)
    assert_nothing_else_changed(sweep)


# -- path parameters -----------------------------------------------------------------------------


def listed_counts(client: httpx.Client, topic_id: str) -> dict[str, Any]:
    """What the topic listing says of ``topic_id``: its counts, or empty maps."""
    for topic in topic_listing(client):
        if topic["topic_id"] == topic_id:
            return {key: topic[key] for key in ("request_counts", "result_counts")}
    return {"request_counts": {}, "result_counts": {}}


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_topic_path(sweep: Sweep, name: str) -> None:
    """GET, DELETE and retry of a hostile topic id: 200 about that topic alone (never the
    canary's counts through a wildcard), nothing else stopped or requeued."""
    value = HOSTILE[name]
    client = sweep.client
    path = f"/v1/topics/{url_value(value)}"
    got = client.get(path)
    if has_surrogate(value):
        # Invalid UTF-8 on the wire: refused, never read as U+FFFD replacements.
        for response in (got, client.delete(path), client.post(f"{path}/retry")):
            assert_json_error(response, 400)
        assert_nothing_else_changed(sweep)
        return
    if CONTROL.search(value):
        # Outside the documented TopicId (no control characters; such a topic cannot exist):
        # a line feed does not match the route at all, so 404, like any unknown route.
        for response in (got, client.delete(path), client.post(f"{path}/retry")):
            if response.status_code != 200:
                assert_json_error(response, 404)
        assert_nothing_else_changed(sweep)
        return
    assert got.status_code == 200, got.text
    assert got.json() == listed_counts(client, in_url(value))
    assert got.json()["request_counts"].get("Created", 0) == 0  # the canary's are not its own
    deleted = client.delete(path)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"status": "ok", "stopped": 0}
    retried = client.post(f"{path}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"status": "ok", "requeued": 0}
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_message_path(sweep: Sweep, name: str) -> None:
    """Not a request id: 404 (400 for invalid UTF-8)."""
    status = 400 if has_surrogate(HOSTILE[name]) else 404
    response = sweep.client.get(f"/v1/messages/{url_value(HOSTILE[name])}")
    assert_json_error(response, status)
    response = sweep.client.get(f"/v1/messages/{sweep.canary_ids[0]}{url_value(HOSTILE[name])}")
    assert_json_error(response, status)


@pytest.mark.parametrize("name", HOSTILE_IDS)
@pytest.mark.parametrize("form", ["bare", "local-part"])
def test_suppression_path(sweep: Sweep, form: str, name: str) -> None:
    """PUT then DELETE ``/v1/suppressions/{email}``: 400 for what email-validator refuses,
    otherwise the normalised address is suppressed (and listed) and then removed again."""
    value = in_url(HOSTILE[name])
    address = value if form == "bare" else f"{value}@example.com"
    path = f"/v1/suppressions/{url_value(address)}"
    client = sweep.client
    put = client.put(path)
    if has_surrogate(address):
        # Invalid UTF-8 on the wire: refused, never stored as U+FFFD replacements.
        assert_json_error(put, 400)
        assert_json_error(client.delete(path), 400)
        assert_nothing_else_changed(sweep)
        return
    normalised = library_normalised(address)
    if normalised is None:
        assert_json_error(put, 400, 404)
        assert_json_error(client.delete(path), 400, 404)
        assert_nothing_else_changed(sweep)
        return
    assert put.status_code == 200, put.text
    stored = put.json()["email"]
    assert stored.lower() == normalised.lower()  # the list ignores case
    assert put.json()["reason"] == "manual"
    sweep.suppressed.add(stored)
    assert_nothing_else_changed(sweep)
    listed = client.get("/v1/suppressions", params={"email": normalised})
    assert [entry["email"] for entry in listed.json()["suppressions"]] == [stored]
    deleted = client.delete(path)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"status": "ok", "email": stored}
    sweep.suppressed.discard(stored)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_suppression_reason(sweep: Sweep, name: str) -> None:
    """openapi.json: a reason is not blank and at most 500 characters; otherwise stored and
    listed verbatim (it is data, never a header)."""
    value = HOSTILE[name]
    address = "reason-probe@example.com"
    response = sweep.json_post(f"/v1/suppressions/{address}", {"reason": value})
    assert_json_error(response, 405)  # PUT, not POST
    response = sweep.client.put(
        f"/v1/suppressions/{address}",
        content=json.dumps({"reason": value}).encode("ascii"),
        headers={"Content-Type": "application/json"},
    )
    if not value.strip() or len(value) > 500 or has_surrogate(value):
        assert_json_error(response, 400)
        assert_nothing_else_changed(sweep)
        return
    assert response.status_code == 200, response.text
    assert response.json()["reason"] == value
    sweep.suppressed.add(address)
    (entry,) = [e for e in suppression_list(sweep.client) if e["email"] == address]
    assert entry["reason"] == value
    assert_nothing_else_changed(sweep)
    assert sweep.client.delete(f"/v1/suppressions/{address}").status_code == 200
    sweep.suppressed.discard(address)
    assert_nothing_else_changed(sweep)


# -- query parameters ----------------------------------------------------------------------------

NUMBER_PARAMETERS = [
    ("/v1/topics", "limit"),
    ("/v1/events/counts/sent", "hours"),
    ("/v1/stats/send-rate", "seconds"),
    ("/v1/suppressions", "limit"),
]


@pytest.mark.parametrize("name", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("path", "parameter"), NUMBER_PARAMETERS, ids=[f"{p}?{q}" for p, q in NUMBER_PARAMETERS]
)
def test_whole_number_query_parameter(sweep: Sweep, path: str, parameter: str, name: str) -> None:
    """Documented as whole numbers in a range: anything else is a 400."""
    response = sweep.client.get(f"{path}?{parameter}={url_value(HOSTILE[name])}")
    assert_json_error(response, 400)


@pytest.mark.parametrize("name", HOSTILE_IDS)
@pytest.mark.parametrize("parameter", ["email", "after"])
def test_suppression_filter(sweep: Sweep, parameter: str, name: str) -> None:
    """``email`` is a plain substring (``%`` and ``_`` are not wildcards), ``after`` a keyset
    bound; printable text of at most 320 characters, else 400."""
    value = in_url(HOSTILE[name])
    response = sweep.client.get(f"/v1/suppressions?{parameter}={url_value(value)}&limit=1000")
    if has_surrogate(value):
        # Invalid UTF-8 on the wire: whatever the server decodes it to, never a 500.
        assert response.status_code in (200, 400), response.text
        return
    if len(value) > 320 or not value.isprintable():
        assert_json_error(response, 400)
        return
    assert response.status_code == 200, response.text
    emails = [entry["email"] for entry in response.json()["suppressions"]]
    if parameter == "email":
        assert all(value.lower() in email.lower() for email in emails), emails
        expected = sorted(e for e in sweep.suppressed if value.lower() in e.lower())
    else:
        assert all(email > value.lower() for email in emails), emails
        expected = sorted(e for e in sweep.suppressed if e > value.lower())
    assert emails == expected


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_api_key_header(sweep: Sweep, name: str) -> None:
    """Any hostile key is a 401 (or hypercorn's own 400 for a malformed header line)."""
    value = HOSTILE[name]
    body = json.dumps({"messages": [message(topic_id="sweep-api-key")]}).encode()
    request = raw_request(
        "POST",
        b"/v1/messages",
        [(b"X-API-KEY", header_bytes(value)), (b"Content-Type", b"application/json")],
        body,
    )
    response = raw_exchange(sweep.service.url, request)
    assert_raw_answer(response, 400, 401)
    if response.body:
        assert response.status == 401
        assert json.loads(response.body)["error"] in ("Invalid API Key", "Empty API Key")
    topics = raw_exchange(
        sweep.service.url,
        raw_request("GET", b"/v1/topics/canary", [(b"X-API-KEY", header_bytes(value))]),
    )
    assert_raw_answer(topics, 400, 401)
    assert_nothing_else_changed(sweep)


def documented_idempotency_key(value: str) -> bool:
    """openapi.json: 1..255 characters matching ``^[!-~][ -~]*$``."""
    return re.fullmatch(r"[!-~][ -~]{0,254}", value) is not None


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_idempotency_key_header(sweep: Sweep, name: str) -> None:
    """A documented key is exact: never a replay of another key's response (``%`` and ``_``
    are no wildcards: the canary's key is ``canary``), a repeat replays, another body is a 409.
    An undocumented one is a 400 (or hypercorn's 400), never a 500."""
    value = HOSTILE[name]
    document = {"messages": [message(topic_id="sweep-idempotency", subject=f"Key {name}")]}

    def post(body: dict[str, Any]) -> RawResponse:
        request = raw_request(
            "POST",
            b"/v1/messages",
            [
                (b"X-API-KEY", API_KEY.encode()),
                (b"Content-Type", b"application/json"),
                (b"Idempotency-Key", header_bytes(value)),
            ],
            json.dumps(body).encode(),
        )
        return raw_exchange(sweep.service.url, request)

    first = post(document)
    if not documented_idempotency_key(value):
        assert_raw_answer(first)
        if first.status == 200:  # e.g. the part before a line break was taken as the key
            answer = json.loads(first.body)
            assert answer != sweep.canary_response
            if "idempotent-replayed" not in first.headers:
                sweep.stored += answer["success"]
        else:
            assert first.status in (400, 409), first
        assert_nothing_else_changed(sweep)
        return
    assert_raw_answer(first, 200)
    answer = json.loads(first.body)
    assert "idempotent-replayed" not in first.headers
    assert answer["success"] == 1
    assert answer["first_request_id"] not in sweep.canary_ids
    sweep.stored += 1
    again = post(document)
    assert_raw_answer(again, 200)
    assert again.headers["idempotent-replayed"] == "true"
    assert json.loads(again.body) == answer
    other = post({"messages": [message(topic_id="sweep-idempotency", subject="Another")]})
    assert_raw_answer(other, 409)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_sns_message_type_header(sweep: Sweep, name: str) -> None:
    request = raw_request(
        "POST",
        b"/v1/events/results",
        [
            (b"x-amz-sns-message-type", header_bytes(HOSTILE[name])),
            (b"Content-Type", b"text/plain; charset=UTF-8"),
        ],
        json.dumps(sns_envelope(sweep)).encode(),
    )
    assert_raw_answer(raw_exchange(sweep.service.url, request), 400)
    assert_nothing_else_changed(sweep)


# -- tokens --------------------------------------------------------------------------------------

FORGERIES = [
    "middle-character-changed",
    "truncated",
    "extended",
    "padded",
    "upper-cased",
    "with-nul",
    "with-crlf",
    "with-set-cookie",
    "other-purpose",
    "plain-request-id",
    "negative-id",
    "huge-id",
    "sql-appended",
]


def forge(real: str, other_purpose: str, request_id: int, kind: str) -> str:
    middle = len(real) // 2
    return {
        "middle-character-changed": real[:middle]
        + ("B" if real[middle] != "B" else "C")
        + real[middle + 1 :],
        "truncated": real[:-1],
        "extended": real + "A",
        "padded": real + "==",
        "upper-cased": real.upper(),
        "with-nul": real + "\x00",
        "with-crlf": real + "\r\n",
        "with-set-cookie": real + "\r\nSet-Cookie: a=b",
        "other-purpose": other_purpose,
        "plain-request-id": str(request_id),
        "negative-id": f"-{request_id}",
        "huge-id": "9" * 40,
        "sql-appended": real + "' OR '1'='1",
    }[kind]


TOKEN_CASES = [f"hostile-{name}" for name in HOSTILE_IDS] + [f"forged-{kind}" for kind in FORGERIES]


def token_for(sweep: Sweep, case: str, purpose: str) -> str:
    if case.startswith("hostile-"):
        return HOSTILE[case.removeprefix("hostile-")]
    victim = sweep.victim
    assert victim is not None
    real, other = (
        (victim.open, victim.unsubscribe)
        if purpose == "open"
        else (victim.unsubscribe, victim.open)
    )
    return forge(real, other, victim.request_id, case.removeprefix("forged-"))


def open_events(client: httpx.Client, request_id: int) -> int:
    return sum(e["count"] for e in details(client, request_id)["events"] if e["type"] == "Open")


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_open_pixel_token(sweep: Sweep, case: str) -> None:
    """Always the same pixel, and a forged token records nothing: after it, a real token of
    another email is the barrier (results are written in order)."""
    victim, witness = sweep.victim, sweep.witness
    assert victim is not None
    assert witness is not None
    client = sweep.client
    token = in_url(token_for(sweep, case, "open"))
    with httpx.Client(base_url=sweep.service.url, timeout=10) as anonymous:
        reference = anonymous.get("/v1/events/open")
        response = anonymous.get(f"/v1/events/open?request_id={url_value(token)}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert "no-store" in response.headers["cache-control"]
        assert response.content == reference.content
        assert "set-cookie" not in response.headers
        opens = open_events(client, witness.request_id)
        barrier = anonymous.get("/v1/events/open", params={"request_id": witness.open})
        assert barrier.content == reference.content
    wait_for(
        lambda: open_events(client, witness.request_id) > opens,
        timeout=10,
        interval=0.01,
        what="the witness's open",
    )
    assert open_events(client, victim.request_id) == 0
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_unsubscribe_token(sweep: Sweep, case: str) -> None:
    """GET shows the page with the token escaped; POST of a forged token answers the same 404
    page as no token at all (the link is not valid, nothing more) and suppresses nothing."""
    assert sweep.victim is not None
    token = in_url(token_for(sweep, case, "unsubscribe"))
    query = f"/v1/unsubscribe?token={url_value(token)}"
    with httpx.Client(base_url=sweep.service.url, timeout=10) as anonymous:
        page = anonymous.get(query)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "set-cookie" not in page.headers
        action = re.search(r'<form method="post" action="([^"]*)">', page.text)
        assert action is not None
        if not has_surrogate(token):
            assert action.group(1) == "?token=" + escape(token, quote=True)
        assert "<script>" not in page.text
        reference = anonymous.post("/v1/unsubscribe", data={"List-Unsubscribe": "One-Click"})
        posted = anonymous.post(query, data={"List-Unsubscribe": "One-Click"})
        assert reference.status_code == 404
        assert posted.status_code == 404
        assert posted.text == reference.text
        assert "set-cookie" not in posted.headers
    assert_nothing_else_changed(sweep)


def test_the_real_tokens_still_work(sweep: Sweep) -> None:
    """The control for the two token sweeps: the victim's own tokens do what forged ones
    must not."""
    assert sweep.victim is not None
    victim = sweep.victim
    with httpx.Client(base_url=sweep.service.url, timeout=10) as anonymous:
        anonymous.get("/v1/events/open", params={"request_id": victim.open})
        wait_for(
            lambda: open_events(sweep.client, victim.request_id) == 1,
            timeout=10,
            what="the victim's open",
        )
        posted = anonymous.post(
            "/v1/unsubscribe",
            params={"token": victim.unsubscribe},
            data={"List-Unsubscribe": "One-Click"},
        )
        assert posted.status_code == 200
    sweep.suppressed.add(victim.email)
    assert_nothing_else_changed(sweep)


# -- the SNS webhook -----------------------------------------------------------------------------


def sns_envelope(sweep: Sweep) -> dict[str, Any]:
    """A well-formed Notification with a long-expired Timestamp and a fake signature: a forged
    permanent bounce of the canary's first email. It is refused (403) before any certificate
    is fetched, and the canary must stay untouched."""
    canary_id = sweep.canary_ids[0]
    event = {
        "eventType": "Bounce",
        "mail": {
            "messageId": "0100018c-forged",
            "destination": [CANARY_EMAILS[0]],
            "tags": {"sesender_request_id": [str(canary_id)]},
        },
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": CANARY_EMAILS[0]}],
        },
    }
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Subject": None,
        "Message": json.dumps(event),
        "Timestamp": "2024-01-01T09:00:05.123Z",
        "SignatureVersion": "2",
        "Signature": base64.b64encode(bytes(256)).decode("ascii"),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


SNS_FIELDS = [
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
]


def test_the_forged_sns_baseline_is_refused(sweep: Sweep) -> None:
    response = sweep.json_post(
        "/v1/events/results", sns_envelope(sweep), {"x-amz-sns-message-type": "Notification"}
    )
    assert_json_error(response, 403)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", HOSTILE_IDS)
@pytest.mark.parametrize("key", SNS_FIELDS)
def test_sns_field(sweep: Sweep, key: str, name: str) -> None:
    """A hostile value in any field: 400 (malformed) or 403 (not verified), nothing stored."""
    envelope = sns_envelope(sweep)
    envelope[key] = HOSTILE[name]
    response = sweep.json_post(
        "/v1/events/results", envelope, {"x-amz-sns-message-type": "Notification"}
    )
    assert_json_error(response, 400, 403, 413)
    assert_nothing_else_changed(sweep)


@pytest.mark.parametrize("name", [*BAD_BYTES, *NOT_JSON])
def test_sns_body_that_is_not_utf8_json(sweep: Sweep, name: str) -> None:
    if name in NOT_JSON:
        body = NOT_JSON[name]
    else:
        text = json.dumps({**sns_envelope(sweep), "Message": "MESSAGE"}).encode("ascii")
        body = text.replace(b"MESSAGE", BAD_BYTES[name])
    response = sweep.client.post(
        "/v1/events/results",
        content=body,
        headers={"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"},
    )
    assert_json_error(response, 400)
    assert_nothing_else_changed(sweep)


# -- raw bytes on the wire -----------------------------------------------------------------------

KEY = (b"X-API-KEY", API_KEY.encode())
#: name -> (method, target, headers, the statuses allowed; empty: any below 500).
RAW_REQUESTS: dict[str, tuple[bytes, bytes, list[tuple[bytes, bytes]], tuple[int, ...]]] = {
    "target-byte-ff": (b"GET", b"/v1/topics/\xff\xfe", [KEY], (400,)),
    "target-utf8": (b"GET", "/v1/topics/뉴스".encode(), [KEY], (200, 400)),
    "target-nul": (b"GET", b"/v1/topics/a\x00b", [KEY], (400,)),
    "target-space": (b"GET", b"/v1/topics/a b", [KEY], (400,)),
    "target-100k": (b"GET", b"/v1/topics/" + b"x" * 100_000, [KEY], ()),
    "target-percent-ff": (b"GET", b"/v1/topics/%FF", [KEY], (400,)),
    "target-percent-ff-put": (b"PUT", b"/v1/suppressions/%FF@example.com", [KEY], (400,)),
    "target-percent-nul": (b"GET", b"/v1/topics/a%00b", [KEY], (200,)),
    "target-percent-surrogate": (b"GET", b"/v1/topics/%ED%A0%80", [KEY], (400,)),
    "target-bad-percent": (b"GET", b"/v1/topics/%zz%", [KEY], (200,)),
    "query-byte-ff": (b"GET", b"/v1/events/open?request_id=\xff", [], ()),
    "query-percent-ff": (b"GET", b"/v1/unsubscribe?token=%FF%00", [], (200,)),
    "query-suppressions-ff": (b"GET", b"/v1/suppressions?email=%FF&after=%C0%AF", [KEY], ()),
    "query-repeated": (b"GET", b"/v1/topics?limit=1&limit=%00", [KEY], ()),
    "query-100k": (b"GET", b"/v1/events/counts/sent?hours=" + b"9" * 100_000, [KEY], (400,)),
    "header-value-ff": (b"GET", b"/v1/topics/canary", [(b"X-API-KEY", b"\xff\xfe")], (401,)),
    "header-value-key-and-more": (
        b"GET",
        b"/v1/topics/canary",
        [(b"X-API-KEY", API_KEY.encode() + "é".encode())],
        (401,),
    ),
    "header-value-nul": (b"GET", b"/v1/topics/canary", [KEY, (b"X-Other", b"a\x00b")], (400,)),
    "header-value-bare-cr": (b"GET", b"/v1/topics/canary", [KEY, (b"X-Other", b"a\rb")], (400,)),
    "header-name-non-ascii": (b"GET", b"/v1/topics/canary", [KEY, (b"X-\xff", b"1")], (400,)),
    "header-100k": (b"GET", b"/v1/topics/canary", [KEY, (b"X-Other", b"x" * 100_000)], ()),
    "method-non-ascii": (b"G\xffT", b"/v1/topics/canary", [KEY], (400,)),
}


@pytest.mark.parametrize("name", list(RAW_REQUESTS))
def test_raw_request(sweep: Sweep, name: str) -> None:
    """Raw bytes the HTTP layer may refuse itself: a well-formed answer below 500, whoever
    gives it."""
    method, target, headers, statuses = RAW_REQUESTS[name]
    request = b"\r\n".join(
        [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
        + [key + b": " + value for key, value in headers]
        + [b"Content-Length: 0", b"Connection: close"]
    )
    response = raw_exchange(sweep.service.url, request + b"\r\n\r\n")
    assert_raw_answer(response, *statuses)
    assert_nothing_else_changed(sweep)


# -- after the sweep -----------------------------------------------------------------------------


def test_the_canary_emails_are_untouched(sweep: Sweep) -> None:
    for request_id, before in zip(sweep.canary_ids, sweep.canary_details, strict=True):
        assert details(sweep.client, request_id) == before
    assert_nothing_else_changed(sweep)


def test_every_outgoing_email_has_exactly_the_expected_headers(sweep: Sweep) -> None:
    files = sorted(sweep.outbox.glob("*.eml"))
    assert files
    for path in files:
        raw = path.read_bytes()
        eml = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(eml, EmailMessage)
        assert_no_injected_header(eml, raw, int(path.name.split("-")[0]))


def test_the_log_has_no_error_and_no_traceback(sweep: Sweep) -> None:
    """Runs last: nothing in the sweep made the service log an error or a traceback."""
    assert sweep.service.process is not None
    assert sweep.service.process.poll() is None
    with sweep.service._lock:
        lines = list(sweep.service.lines)
        raw_lines = list(sweep.service.raw_lines)
    bad = [
        line for line in lines if line.get("level") in ("error", "critical") or "exception" in line
    ]
    assert bad == [], json.dumps(bad, indent=1)[:5000]
    assert not [line for line in raw_lines if "Traceback" in line]
    assert all(line.startswith("{") for line in raw_lines), [
        line for line in raw_lines if not line.startswith("{")
    ][:5]
