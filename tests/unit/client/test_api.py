"""``SesenderClient`` against ``httpx.MockTransport``: requests, parsing, error translation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sesender.client.api import SesenderClient
from sesender.errors import ClientError

URL = "http://sesender.test:3000"
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, *, url: str = URL, key: str = "secret") -> SesenderClient:
    return SesenderClient(url, key, transport=httpx.MockTransport(handler))


def answer(status: int, body: Any = None, **kwargs: Any) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=body, **kwargs)

    return handle


def raising(exc: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


def error_of(handler: Handler) -> ClientError:
    with client_for(handler) as client, pytest.raises(ClientError) as caught:
        client.topic_stats("t")
    message = str(caught.value)
    assert "\n" not in message
    return caught.value


# -- error translation --------------------------------------------------------------------------


def test_server_down_is_connection_refused() -> None:
    error = error_of(raising(httpx.ConnectError("[Errno 111] Connection refused")))
    assert str(error) == f"cannot reach sesender at {URL}: connection refused"
    assert error.status is None
    assert not error.retryable
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_other_connect_failures_keep_their_reason() -> None:
    unknown = error_of(raising(httpx.ConnectError("[Errno -2] Name or service not known")))
    assert str(unknown) == f"cannot reach sesender at {URL}: unknown host"
    timeout = error_of(raising(httpx.ConnectTimeout("timed out")))
    assert str(timeout) == f"cannot reach sesender at {URL}: connection timed out"
    tls = error_of(raising(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]\n  details")))
    assert str(tls) == f"cannot reach sesender at {URL}: [SSL: CERTIFICATE_VERIFY_FAILED] details"


def test_timeouts_and_broken_connections_are_retryable() -> None:
    timeout = error_of(raising(httpx.ReadTimeout("")))
    assert str(timeout) == f"sesender at {URL} did not answer in time (ReadTimeout)"
    assert timeout.retryable
    broken = error_of(raising(httpx.RemoteProtocolError("Server disconnected")))
    assert str(broken) == f"the connection to sesender at {URL} broke: Server disconnected"
    assert broken.retryable


def test_wrong_key_401() -> None:
    error = error_of(answer(401, {"error": "Invalid API Key"}))
    assert str(error) == "the server refused the API key (Invalid API Key)"
    assert error.status == 401


def test_400_carries_the_server_message() -> None:
    message = "Too many recipients: 10001 in one request (at most 10000)"
    error = error_of(answer(400, {"error": message}))
    assert str(error) == f"{message} (HTTP 400)"
    assert error.status == 400
    assert not error.retryable


def test_5xx_with_and_without_a_json_message() -> None:
    error = error_of(answer(503, {"error": "Storage unavailable: disk full"}))
    assert str(error) == f"sesender at {URL} failed (HTTP 503): Storage unavailable: disk full"
    assert error.retryable
    html = error_of(answer(502, None, text="<html><body>Bad gateway\n</body></html>"))
    assert str(html) == f"sesender at {URL} failed (HTTP 502): Bad Gateway"
    assert not html.retryable
    plain = error_of(answer(500, None, text="upstream\nfailed"))
    assert str(plain) == f"sesender at {URL} failed (HTTP 500): upstream failed"


def test_a_200_that_is_not_the_api_is_reported() -> None:
    error = error_of(answer(200, None, text="<html>welcome</html>"))
    assert str(error) == (
        f"unexpected answer to GET {URL}/v1/topics/t (HTTP 200, not JSON);"
        f" is {URL} a sesender server?"
    )
    shape = error_of(answer(200, {"request_counts": [], "result_counts": {}}))
    assert "'request_counts' is not a map of counts" in str(shape)


def test_a_redirect_is_reported_not_followed() -> None:
    error = error_of(answer(308, None, headers={"Location": "http://elsewhere.test/v1/topics/t"}))
    assert str(error) == (
        f"unexpected redirect (HTTP 308) from GET {URL}/v1/topics/t"
        " to http://elsewhere.test/v1/topics/t"
    )


@pytest.mark.parametrize("url", ["localhost:3000", "ftp://host", "http://", ""])
def test_invalid_urls_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(ClientError, match="invalid sesender URL"):
        client_for(answer(200, {}), url=url)


# -- requests and records -----------------------------------------------------------------------


def test_submit_sends_one_message_with_key_and_schedule() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "total": 3,
                "success": 1,
                "errors": 1,
                "duplicates": 1,
                "scheduled": True,
                "rejected": [{"email": "bad", "reason": "no @"}],
                "first_request_id": 41,
            },
            headers={"Idempotent-Replayed": "true"},
        )

    with client_for(handle) as client:
        result = client.submit(
            topic_id="t",
            subject="Hi",
            content="<p>x</p>",
            emails=["a@example.com", "bad", "A@example.com"],
            scheduled_at="2030-01-01 09:00:00",
            idempotency_key="key-1",
        )
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{URL}/v1/messages"
    assert request.headers["X-API-KEY"] == "secret"
    assert request.headers["Idempotency-Key"] == "key-1"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "messages": [
            {
                "topic_id": "t",
                "emails": ["a@example.com", "bad", "A@example.com"],
                "subject": "Hi",
                "content": "<p>x</p>",
            }
        ],
        "scheduled_at": "2030-01-01 09:00:00",
    }
    assert (result.total, result.success, result.errors, result.duplicates) == (3, 1, 1, 1)
    assert result.scheduled
    assert result.rejected[0].email == "bad"
    assert result.first_request_id == 41
    assert result.replayed


def test_submit_accepts_the_original_response_without_new_fields() -> None:
    original = {"total": 2, "success": 2, "errors": 0, "duration_ms": 45, "scheduled": False}
    with client_for(answer(200, original)) as client:
        result = client.submit(topic_id="", subject="s", content="c", emails=["a@b.c", "d@e.f"])
    assert result.duplicates == 0
    assert result.rejected == ()
    assert result.first_request_id is None


def test_a_past_scheduled_at_is_flagged_but_does_not_wait() -> None:
    """The server answers ``scheduled: true`` for any given time, as the original; whether the
    emails wait is ``due_at``: a past time was due at once, a future one waits."""
    now = datetime(2026, 1, 15, 10, tzinfo=UTC)
    past = {"total": 1, "success": 1, "errors": 0, "duration_ms": 1, "scheduled": True}
    with client_for(answer(200, past | {"due_at": "2026-01-15T09:59:59.000+00:00"})) as client:
        due_now = client.submit(topic_id="", subject="s", content="c", emails=["a@b.c"])
    with client_for(answer(200, past | {"due_at": "2026-01-16T00:00:00.000+00:00"})) as client:
        later = client.submit(topic_id="", subject="s", content="c", emails=["a@b.c"])
    with client_for(answer(200, past)) as client:
        older_server = client.submit(topic_id="", subject="s", content="c", emails=["a@b.c"])
    assert due_now.scheduled
    assert later.scheduled
    assert due_now.due_at == datetime(2026, 1, 15, 9, 59, 59, tzinfo=UTC)
    assert (due_now.waits(now), later.waits(now), older_server.waits(now)) == (False, True, True)


def test_topic_ids_are_quoted_in_paths() -> None:
    paths: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        if request.method == "DELETE":
            return httpx.Response(200, json={"status": "ok", "stopped": 7})
        if request.url.path.endswith("/retry"):
            return httpx.Response(200, json={"status": "ok", "requeued": 2})
        return httpx.Response(
            200,
            json={
                "request_counts": {"Created": 1, "Processed": 2, "Sent": 3},
                "result_counts": {"Bounce": 1},
            },
        )

    with client_for(handle) as client:
        stats = client.topic_stats("news/2024 #1?")
        assert client.cancel_topic("a b") == 7
        assert client.retry_failed("x") == 2
    assert paths == [
        "/v1/topics/news%2F2024%20%231%3F",
        "/v1/topics/a%20b",
        "/v1/topics/x/retry",
    ]
    assert (stats.pending, stats.total, stats.requests("Sent"), stats.results("Bounce")) == (
        3,
        6,
        3,
        1,
    )
    assert stats.requests("Failed") == 0


def test_iter_suppressions_follows_next_until_the_last_page() -> None:
    addresses = [f"u{i:04}@example.com" for i in range(2_500)]
    queries: list[dict[str, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        queries.append(query)
        limit = int(query["limit"])
        after = query.get("after", "")
        page = [a for a in addresses if a > after][:limit]
        entries = [
            {"email": a, "reason": "bounce", "source": "sns", "detail": None, "created_at": "t"}
            for a in page
        ]
        following = page[-1] if len(page) == limit else None
        return httpx.Response(200, json={"suppressions": entries, "next": following})

    with client_for(handle) as client:
        everything = list(client.iter_suppressions(email="example"))
        assert [entry.email for entry in everything] == addresses
        assert [q.get("after") for q in queries] == [None, "u0999@example.com", "u1999@example.com"]
        assert {q["email"] for q in queries} == {"example"}
        queries.clear()
        first = list(client.iter_suppressions(limit=1_500))
    assert len(first) == 1_500
    assert [q["limit"] for q in queries] == ["1000", "500"]


def test_add_and_remove_suppressions() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(200, json={"status": "ok", "email": "a+b@example.com"})
        reason = json.loads(request.content)["reason"] if request.content else "manual"
        entry = {"email": "A+b@example.com", "reason": reason, "source": "api", "created_at": "t"}
        return httpx.Response(200, json=entry)

    with client_for(handle) as client:
        assert client.add_suppression("A+b@example.com").reason == "manual"
        assert client.add_suppression("A+b@example.com", reason="asked").reason == "asked"
        assert client.remove_suppression("A+b@example.com") == "a+b@example.com"
    assert [r.url.raw_path.decode() for r in seen] == ["/v1/suppressions/A%2Bb@example.com"] * 3
    assert seen[0].content == b""
    assert [r.method for r in seen] == ["PUT", "PUT", "DELETE"]


def test_message_detail() -> None:
    detail = {"request_id": 5, "status": "Sent", "events": []}
    with client_for(answer(200, detail)) as client:
        assert client.message(5) == detail
