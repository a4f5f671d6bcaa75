"""Compatibility of the HTTP API with the original service, against the real process.

One ``sesender`` process (outbox backend, so the sent emails can be read back) serves the whole
module, with small limits to reach the 400/413 paths cheaply: ``MAX_REQUEST_BYTES=2048`` and
``MAX_RECIPIENTS_PER_REQUEST=5``. Each test uses its own topic ids, so the tests do not depend on
each other's data.

The original README's example is posted byte for byte. Its ``scheduled_at`` ("2024-01-01
09:00:00") is in the past: it is accepted and sent at once, so the response says
``"scheduled": false`` (the emails do not wait for a schedule) and both emails reach ``Sent``. The
original answered ``"scheduled": true`` whenever the field was present; the field's meaning here
is "waits for a future time", which is what a client can act on (openapi.json: a past time sends
now). A future ``scheduled_at`` answers ``"scheduled": true`` and keeps the emails ``Created``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.harness import ServiceProcess, base_env, outbox_files, wait_for

pytestmark = pytest.mark.e2e

MAX_REQUEST_BYTES = 2048
MAX_RECIPIENTS = 5

#: The request body of the original README ("API 가이드"), verbatim, indentation included.
ORIGINAL_EXAMPLE = """{
  "messages": [
    {
      "topic_id": "newsletter_2024_01",
      "emails": ["user1@example.com", "user2@example.com"],
      "subject": "1월 뉴스레터",
      "content": "<h1>안녕하세요!</h1><p>...</p>"
    }
  ],
  "scheduled_at": "2024-01-01 09:00:00"
}"""

STATUS_NAMES = ("Created", "Processed", "Sent", "Failed", "Stopped")
RESULT_TYPES = ("Delivery", "Open", "Bounce", "Complaint")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("compat")
    process = ServiceProcess(
        workdir,
        base_env(
            workdir,
            SENDER_BACKEND="outbox",
            MAX_SEND_PER_SECOND="200",
            MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
            MAX_RECIPIENTS_PER_REQUEST=str(MAX_RECIPIENTS),
        ),
    )
    try:
        yield process.start()
    finally:
        process.kill()


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


def outbox(service: ServiceProcess) -> Path:
    return Path(service.env["OUTBOX_DIR"])


def submit_json(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/v1/messages", json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> str:
    """A JSON error: exactly ``{"error": <string>}`` with ``status``; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str)
    assert body["error"]
    if message is not None:
        assert body["error"] == message
    return str(body["error"])


def topic(client: httpx.Client, topic_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/topics/{topic_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def wait_counts(
    client: httpx.Client, topic_id: str, *, section: str, name: str, count: int
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = topic(client, topic_id)
        return body if body[section].get(name, 0) >= count else None

    found: dict[str, Any] = wait_for(reached, timeout=20, what=f"{count} {name} in {topic_id}")
    return found


def assert_topic_shape(body: dict[str, Any]) -> None:
    """The documented shape of a known topic: every status name and result type, integers."""
    assert list(body) == ["request_counts", "result_counts"]
    requests, results = body["request_counts"], body["result_counts"]
    assert set(STATUS_NAMES) <= set(requests), requests
    assert set(RESULT_TYPES) <= set(results), results
    for value in (*requests.values(), *results.values()):
        assert type(value) is int
        assert value >= 0


def emails_of_topic(service: ServiceProcess, topic_id: str) -> list[Message]:
    messages: list[Message] = []
    for path in outbox_files(outbox(service)):
        message = message_from_bytes(path.read_bytes(), policy=default_policy)
        if str(message["X-Sesender-Topic"]) == topic_id:
            messages.append(message)
    return messages


def html_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/html part")


# -- POST /v1/messages, the original's example ----------------------------------------------------


def test_the_original_readme_example_verbatim(
    service: ServiceProcess, client: httpx.Client
) -> None:
    response = client.post(
        "/v1/messages",
        content=ORIGINAL_EXAMPLE.encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # Every documented field, with its JSON type (bool is not an int here).
    assert type(body["total"]) is int
    assert type(body["success"]) is int
    assert type(body["errors"]) is int
    assert type(body["duration_ms"]) is int
    assert type(body["scheduled"]) is bool
    assert (body["total"], body["success"], body["errors"]) == (2, 2, 0)
    assert 0 <= body["duration_ms"] < 10_000
    assert body["scheduled"] is False  # 2024-01-01 09:00:00 is past: sent at once
    # Extra fields are allowed, never instead of the documented ones.
    assert body["rejected"] == []
    assert body["duplicates"] == 0
    assert body["scheduled_at"] == "2024-01-01T09:00:00+00:00"  # SCHEDULE_TIMEZONE=UTC

    stats = wait_counts(
        client, "newsletter_2024_01", section="request_counts", name="Sent", count=2
    )
    assert_topic_shape(stats)
    assert stats["request_counts"]["Sent"] == 2
    assert sum(stats["request_counts"].values()) == 2
    assert stats["result_counts"] == {"Delivery": 0, "Open": 0, "Bounce": 0, "Complaint": 0}

    sent = wait_for(
        lambda: (
            (found := emails_of_topic(service, "newsletter_2024_01")) and len(found) == 2 and found
        ),
        timeout=10,
        what="two .eml files of the topic",
    )
    assert sorted(str(m["To"]) for m in sent) == ["user1@example.com", "user2@example.com"]
    for message in sent:
        assert str(message["Subject"]) == "1월 뉴스레터"
        assert "<h1>안녕하세요!</h1><p>...</p>" in html_part(message)


def test_a_future_scheduled_at_is_scheduled_and_can_be_cancelled(client: httpx.Client) -> None:
    body = json.loads(ORIGINAL_EXAMPLE)
    body["messages"][0]["topic_id"] = "compat-future"
    body["scheduled_at"] = "2099-01-01 09:00:00"
    response = submit_json(client, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["scheduled"] is True
    assert (result["total"], result["success"], result["errors"]) == (2, 2, 0)
    assert result["scheduled_at"] == "2099-01-01T09:00:00+00:00"

    stats = topic(client, "compat-future")
    assert_topic_shape(stats)
    assert stats["request_counts"]["Created"] == 2

    cancelled = client.delete("/v1/topics/compat-future")
    assert cancelled.status_code == 200
    assert cancelled.headers["content-type"] == "application/json"
    assert cancelled.json() == {"status": "ok", "stopped": 2}
    assert type(cancelled.json()["stopped"]) is int
    after = topic(client, "compat-future")["request_counts"]
    assert (after["Stopped"], after["Created"]) == (2, 0)
    again = client.delete("/v1/topics/compat-future")
    assert again.json() == {"status": "ok", "stopped": 0}


def test_invalid_and_duplicate_addresses_are_counted_not_refused(client: httpx.Client) -> None:
    response = submit_json(
        client,
        {
            "messages": [
                {
                    "topic_id": "compat-mixed",
                    "emails": ["ok@example.com", "OK@example.com", "not-an-address", 7],
                    "subject": "Mixed",
                    "content": "<p>x</p>",
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["success"], body["errors"], body["duplicates"]) == (4, 1, 2, 1)
    assert [r["email"] for r in body["rejected"]] == ["not-an-address", "7"]
    assert all(isinstance(r["reason"], str) and r["reason"] for r in body["rejected"])
    assert body["scheduled"] is False
    assert "scheduled_at" not in body


# -- GET/DELETE /v1/topics ------------------------------------------------------------------------


def test_an_unknown_topic_has_empty_maps_and_nothing_to_stop(client: httpx.Client) -> None:
    assert topic(client, "compat-never-used") == {"request_counts": {}, "result_counts": {}}
    response = client.delete("/v1/topics/compat-never-used")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "stopped": 0}


def test_topic_ids_with_slashes_and_unicode_are_addressable(client: httpx.Client) -> None:
    topic_id = "뉴스/2024 01"
    response = submit_json(
        client,
        {
            "messages": [
                {"topic_id": topic_id, "emails": ["x@example.com"], "subject": "s", "content": "c"}
            ],
            "scheduled_at": "2099-01-01T00:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    assert topic(client, "뉴스/2024%2001")["request_counts"]["Created"] == 1
    assert client.delete("/v1/topics/%EB%89%B4%EC%8A%A4%2F2024%2001").json() == {
        "status": "ok",
        "stopped": 1,
    }


# -- GET /v1/events/counts/sent -------------------------------------------------------------------


def test_counts_sent(client: httpx.Client) -> None:
    submit = submit_json(
        client,
        {
            "messages": [
                {
                    "topic_id": "compat-count",
                    "emails": ["c1@example.com", "c2@example.com"],
                    "subject": "s",
                    "content": "c",
                }
            ]
        },
    )
    assert submit.status_code == 200
    wait_counts(client, "compat-count", section="request_counts", name="Sent", count=2)
    for query in ("", "?hours=24", "?hours=1", "?hours=8760"):
        response = client.get(f"/v1/events/counts/sent{query}")
        assert response.status_code == 200, (query, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert list(body) == ["count"]
        assert type(body["count"]) is int
        assert body["count"] >= 2


@pytest.mark.parametrize("hours", ["8761", "abc", "-1", "1.5", "", "1e3", "99999999999999999999"])
def test_counts_sent_refuses_hours_outside_0_to_8760(client: httpx.Client, hours: str) -> None:
    response = client.get("/v1/events/counts/sent", params={"hours": hours})
    assert_error(response, 400, "hours must be a whole number from 0 to 8760")


def test_counts_sent_with_hours_0_is_an_empty_window(client: httpx.Client) -> None:
    """As the original: 200 and a count of 0, even right after sends (a window of no time)."""
    submit_json(
        client,
        {
            "messages": [
                {
                    "topic_id": "zero-hours",
                    "emails": ["z@example.com"],
                    "subject": "s",
                    "content": "c",
                }
            ]
        },
    )
    wait_counts(client, "zero-hours", section="request_counts", name="Sent", count=1)
    response = client.get("/v1/events/counts/sent", params={"hours": "0"})
    assert response.status_code == 200
    assert response.json() == {"count": 0}


# -- GET /v1/events/open --------------------------------------------------------------------------


def assert_pixel(response: httpx.Response) -> bytes:
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "no-store" in response.headers["cache-control"]
    assert response.content.startswith(PNG_SIGNATURE)
    return response.content


def test_the_pixel_is_the_same_whatever_the_id(client: httpx.Client) -> None:
    bodies = set()
    anonymous = httpx.Client(base_url=client.base_url, timeout=10)  # the pixel is public
    with anonymous:
        for query in (
            None,
            {"request_id": ""},
            {"request_id": "1"},
            {"request_id": "garbage"},
            {"request_id": "99999999999999999999999"},
            {"request_id": "' OR 1=1 --"},
            {"request_id": "x" * 5000},
            {"other": "1"},
        ):
            bodies.add(assert_pixel(anonymous.get("/v1/events/open", params=query)))
    assert len(bodies) == 1


def test_a_valid_token_from_a_sent_email_records_one_open(
    service: ServiceProcess, client: httpx.Client
) -> None:
    response = submit_json(
        client,
        {
            "messages": [
                {
                    "topic_id": "compat-open",
                    "emails": ["reader@example.com"],
                    "subject": "Open me",
                    "content": "<html><body><p>Hi</p></body></html>",
                }
            ]
        },
    )
    assert response.status_code == 200
    (message,) = wait_for(
        lambda: emails_of_topic(service, "compat-open"), timeout=20, what="the email"
    )
    html = html_part(message)
    match = re.search(r'<img src="([^"]+/v1/events/open\?request_id=[^"]+)"', html)
    assert match is not None, html
    assert html.index(match.group(0)) < html.index("</body>")  # inserted before </body>
    token = parse_qs(urlsplit(match.group(1).replace("&amp;", "&")).query)["request_id"][0]
    assert not token.isdigit()  # signed, not the plain request id

    with httpx.Client(base_url=client.base_url, timeout=10) as anonymous:
        garbage = assert_pixel(anonymous.get("/v1/events/open", params={"request_id": "nope"}))
        assert assert_pixel(anonymous.get("/v1/events/open", params={"request_id": token})) == (
            garbage
        )
        stats = wait_counts(client, "compat-open", section="result_counts", name="Open", count=1)
        assert_topic_shape(stats)
        assert_pixel(anonymous.get("/v1/events/open", params={"request_id": token}))
    # A second open of the same email is not a second recipient.
    wait_for(
        lambda: client.get(f"/v1/messages/{response.json()['first_request_id']}").json()["events"],
        timeout=10,
        what="the open event on the email",
    )
    assert topic(client, "compat-open")["result_counts"]["Open"] == 1


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages/1"),
        ("GET", "/v1/topics/newsletter_2024_01"),
        ("DELETE", "/v1/topics/newsletter_2024_01"),
        ("GET", "/v1/events/counts/sent?hours=24"),
    ],
)
def test_auth_errors_carry_the_original_messages(
    service: ServiceProcess, method: str, path: str
) -> None:
    body = json.loads(ORIGINAL_EXAMPLE) if method == "POST" else None
    for headers, message in (
        ({}, "Missing X-API-KEY header"),
        ({"X-API-KEY": ""}, "Empty API Key"),
        ({"X-API-KEY": "wrong-key"}, "Invalid API Key"),
    ):
        # A connection per request: reusing one is test_a_keep_alive_connection_survives_...
        with httpx.Client(base_url=service.url, timeout=10) as anonymous:
            response = anonymous.request(method, path, headers=headers, json=body)
        assert_error(response, 401, message)


def test_nothing_is_changed_by_an_unauthenticated_request(service: ServiceProcess) -> None:
    body = json.loads(ORIGINAL_EXAMPLE)
    body["messages"][0]["topic_id"] = "compat-unauthenticated"
    with httpx.Client(base_url=service.url, timeout=10) as anonymous:
        assert anonymous.post("/v1/messages", json=body).status_code == 401
    with service.client() as client:
        assert topic(client, "compat-unauthenticated") == {
            "request_counts": {},
            "result_counts": {},
        }


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/v1/events/open"])
def test_public_routes_need_no_key(service: ServiceProcess, path: str) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as anonymous:
        assert anonymous.get(path).status_code == 200


# -- JSON errors ----------------------------------------------------------------------------------


def test_unknown_routes_and_resources_are_json_404s(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "Not found")
    assert_error(client.get("/v1/topics/"), 404, "Not found")
    assert_error(client.get("/v1/messages/-1"), 404, "Not found")
    assert_error(client.get("/v1/messages/987654321"), 404, "No email with request id 987654321")
    # Larger than SQLite's integers: still a 404, not a 500.
    assert_error(client.get("/v1/messages/9223372036854775808"), 404)
    assert_error(client.get("/v1/messages/" + "9" * 5000), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/messages", {"POST"}),
        ("PUT", "/v1/messages", {"POST"}),
        ("POST", "/health", {"GET", "HEAD"}),
        ("PATCH", "/v1/topics/x", {"GET", "HEAD", "DELETE"}),
        ("DELETE", "/v1/events/open", {"GET", "HEAD"}),
    ],
)
def test_wrong_methods_are_json_405s_with_allow(
    client: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)
    assert_error(response, 405, "Method not allowed")
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}


def test_a_body_over_max_request_bytes_is_a_json_413(service: ServiceProcess) -> None:
    body = json.loads(ORIGINAL_EXAMPLE)
    body["messages"][0]["topic_id"] = "compat-too-large"
    body["messages"][0]["content"] = "<p>" + "x" * MAX_REQUEST_BYTES + "</p>"
    with service.client() as client:
        response = submit_json(client, body)
    assert_error(response, 413, "Request body too large")
    with service.client() as fresh:  # see test_a_keep_alive_connection_survives_...
        assert topic(fresh, "compat-too-large")["request_counts"] == {}


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
)
def test_a_body_that_is_not_json_is_a_json_415(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    response = client.post("/v1/messages", content=ORIGINAL_EXAMPLE.encode(), headers=headers)
    assert_error(response, 415, "Content-Type must be application/json")


def test_bad_json_is_a_400(client: httpx.Client) -> None:
    for raw in (b"{", b"", b"not json", b"\xff\xfe"):
        response = client.post(
            "/v1/messages", content=raw, headers={"Content-Type": "application/json"}
        )
        assert assert_error(response, 400).startswith("Invalid JSON body")


def test_too_many_recipients_is_a_400_and_nothing_is_stored(client: httpx.Client) -> None:
    emails = [f"r{i}@example.com" for i in range(MAX_RECIPIENTS + 1)]
    response = submit_json(
        client,
        {
            "messages": [
                {"topic_id": "compat-too-many", "emails": emails, "subject": "s", "content": "c"}
            ]
        },
    )
    assert_error(
        response,
        400,
        f"Too many recipients: {MAX_RECIPIENTS + 1} in one request (at most {MAX_RECIPIENTS})",
    )
    assert topic(client, "compat-too-many")["request_counts"] == {}
    exactly = submit_json(
        client,
        {
            "messages": [
                {
                    "topic_id": "compat-too-many",
                    "emails": emails[:MAX_RECIPIENTS],
                    "subject": "s",
                    "content": "c",
                }
            ],
            "scheduled_at": "2099-01-01 00:00:00",
        },
    )
    assert exactly.status_code == 200
    assert topic(client, "compat-too-many")["request_counts"]["Created"] == MAX_RECIPIENTS


@pytest.mark.parametrize("scheduled_at", ["tomorrow", "2024-13-01 09:00:00", "01/01/2024", 12])
def test_an_unreadable_scheduled_at_is_a_400_and_nothing_is_stored(
    client: httpx.Client, scheduled_at: Any
) -> None:
    body = json.loads(ORIGINAL_EXAMPLE)
    body["messages"][0]["topic_id"] = "compat-bad-schedule"
    body["scheduled_at"] = scheduled_at
    message = assert_error(submit_json(client, body), 400)
    assert "scheduled_at" in message
    assert topic(client, "compat-bad-schedule")["request_counts"] == {}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"messages": []},
        {"messages": [{"emails": ["a@example.com"], "subject": "", "content": "c"}]},
        {
            "messages": [
                {"emails": ["a@example.com"], "subject": "a\r\nBcc: x@example.com", "content": "c"}
            ]
        },
        {"messages": [{"emails": "a@example.com", "subject": "s", "content": "c"}]},
    ],
)
def test_bad_shapes_are_400s(client: httpx.Client, body: Any) -> None:
    assert_error(submit_json(client, body), 400)


# -- Idempotency-Key ------------------------------------------------------------------------------


def idempotent_body(topic_id: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ORIGINAL_EXAMPLE)
    body["messages"][0]["topic_id"] = topic_id
    body["scheduled_at"] = "2099-01-01 09:00:00"  # stays Created: the counts are exact
    return body


DOCUMENTED = ("total", "success", "errors", "scheduled")


def test_an_idempotent_repeat_stores_nothing_and_another_body_is_a_409(
    client: httpx.Client,
) -> None:
    body = idempotent_body("compat-idempotent")
    first = submit_json(client, body, **{"Idempotency-Key": "compat-key-1"})
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    # The same body, even re-serialised with another key order, is a repeat.
    reordered = json.dumps(dict(reversed(list(body.items()))), ensure_ascii=False, indent=1)
    repeat = client.post(
        "/v1/messages",
        content=reordered.encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "compat-key-1"},
    )
    assert repeat.status_code == 200, repeat.text
    assert repeat.headers["idempotent-replayed"] == "true"
    for field in DOCUMENTED:
        assert repeat.json()[field] == first.json()[field]
    assert topic(client, "compat-idempotent")["request_counts"]["Created"] == 2  # not 4

    changed = idempotent_body("compat-idempotent")
    changed["messages"][0]["emails"].append("user3@example.com")
    conflict = submit_json(client, changed, **{"Idempotency-Key": "compat-key-1"})
    assert_error(conflict, 409, "Idempotency-Key was already used with a different body")
    assert topic(client, "compat-idempotent")["request_counts"]["Created"] == 2

    other_key = submit_json(client, body, **{"Idempotency-Key": "compat-key-2"})
    assert other_key.status_code == 200
    assert "idempotent-replayed" not in other_key.headers
    assert topic(client, "compat-idempotent")["request_counts"]["Created"] == 4


def test_an_idempotent_repeat_returns_the_first_response_verbatim(client: httpx.Client) -> None:
    """A repeat with the same key and the same body returns the first response (openapi.json)."""
    body = idempotent_body("compat-idempotent-verbatim")
    first = submit_json(client, body, **{"Idempotency-Key": "compat-verbatim"})
    repeat = submit_json(client, body, **{"Idempotency-Key": "compat-verbatim"})
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json() == first.json()


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_unusable_idempotency_key_is_a_400(client: httpx.Client, key: str) -> None:
    response = submit_json(client, idempotent_body("compat-bad-key"), **{"Idempotency-Key": key})
    assert_error(response, 400, "Idempotency-Key must be 1..255 printable characters")
    assert topic(client, "compat-bad-key")["request_counts"] == {}


# -- HTTP hygiene ---------------------------------------------------------------------------------


def test_no_response_is_html(service: ServiceProcess) -> None:
    """Errors are JSON, never an HTML page. Werkzeug answers paths with a doubled slash by a
    redirect whose body is an HTML page; a JSON API should answer them itself."""
    with httpx.Client(base_url=service.url, timeout=10, follow_redirects=False) as anonymous:
        for path in ("/v1/topics//x", "//health"):
            response = anonymous.get(path, headers={"X-API-KEY": service.api_key})
            assert "html" not in response.headers.get("content-type", ""), (
                path,
                response.status_code,
                response.text[:200],
            )


def test_a_keep_alive_connection_survives_early_error_responses(service: ServiceProcess) -> None:
    """Clients reuse connections. A response sent before the request body was read (401 from the
    key check, 404/405 from routing, 415, 413, the automatic OPTIONS answer) must leave the
    connection able to answer the next request, or close it (``Connection: close``): each of
    these requests gets its answer well within the client's timeout. Client libraries write
    the headers and the body separately, so the body often arrives after such an answer."""
    body = json.dumps(json.loads(ORIGINAL_EXAMPLE)).encode()
    too_large = b"x" * (MAX_REQUEST_BYTES + 1)
    cases = [
        ("POST", "/v1/messages", {"X-API-KEY": "wrong"}, body, 401),
        ("POST", "/v1/messages", {"Content-Type": "text/plain"}, body, 415),
        ("POST", "/nope", {}, body, 404),
        ("PUT", "/v1/messages", {}, body, 405),
        ("OPTIONS", "/v1/messages", {}, body, 200),
        ("POST", "/v1/messages", {}, too_large, 413),
        ("POST", "/v1/messages", {"Idempotency-Key": "compat-keep-alive"}, body, 200),
    ]
    with httpx.Client(
        base_url=service.url, headers={"X-API-KEY": service.api_key}, timeout=3
    ) as client:
        for round_number in range(25):
            for method, path, headers, content, status in cases:
                try:
                    response = client.request(
                        method,
                        path,
                        content=content,
                        headers={"Content-Type": "application/json", **headers},
                    )
                except httpx.TimeoutException:
                    pytest.fail(
                        f"round {round_number}: {method} {path} got no answer in 3 s on a reused"
                        " connection"
                    )
                assert response.status_code == status, (method, path, response.text)
        assert client.get("/health").status_code == 200
