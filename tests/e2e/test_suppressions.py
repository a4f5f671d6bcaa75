"""The suppression list API and ``POST /v1/topics/{topic_id}/retry``, against the running service.

Both services use the memory backend. The retry service makes every send attempt a throttle
(``MEMORY_THROTTLE_RATE=1.0``) with ``MAX_ATTEMPTS=1``, so ordinary recipients end ``Failed`` as
*exhausted* (transient: retryable) while recipients whose local part starts with ``reject`` end
``Failed`` as *permanent* (the memory backend's MessageRejected trigger: never retried).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ServiceProcess, message_details, submit, wait_for, wait_topic
from tests.e2e.sns_support import running_service

pytestmark = pytest.mark.e2e

API_KEY = "e2e-suppressions-key"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("suppressions"),
        API_KEY=API_KEY,
        SENDER_BACKEND="memory",
        MAX_SEND_PER_SECOND="100",
        HTTP_READ_TIMEOUT_SECONDS="3",
    ) as running:
        yield running


def api(service: ServiceProcess, **headers: str) -> httpx.Client:
    """A client that opens a new connection per request (see the keep-alive test below for
    why the other tests do not reuse connections)."""
    return httpx.Client(
        base_url=service.url,
        headers={"X-API-KEY": API_KEY, **headers},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def listed(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/suppressions", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def emails(page: dict[str, Any]) -> list[str]:
    return [entry["email"] for entry in page["suppressions"]]


def test_put_list_and_delete_an_entry(service: ServiceProcess) -> None:
    with api(service) as client:
        put = client.put("/v1/suppressions/Person@Example.org", json={"reason": "asked by phone"})
        assert put.status_code == 200, put.text
        entry = put.json()
        assert entry["email"] == "person@example.org"  # stored lower-cased
        assert entry["reason"] == "asked by phone"
        assert entry["source"] == "api"
        assert entry["created_at"].endswith("+00:00")
        assert listed(client, email="person@")["suppressions"] == [entry]

        # No body: reason "manual"; a second PUT replaces the reason of the same entry.
        bare = client.put("/v1/suppressions/bare@example.org")
        assert bare.status_code == 200, bare.text
        assert bare.json()["reason"] == "manual"
        again = client.put("/v1/suppressions/person@example.org", json={"reason": "legal"})
        assert again.json()["reason"] == "legal"
        assert again.json()["created_at"] == entry["created_at"]

        deleted = client.delete("/v1/suppressions/PERSON@example.org")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"status": "ok", "email": "person@example.org"}
        missing = client.delete("/v1/suppressions/person@example.org")
        assert missing.status_code == 404
        assert missing.json() == {"error": "person@example.org is not suppressed"}
        assert "person@example.org" not in emails(listed(client, email="person"))


def test_the_email_filter_takes_percent_and_underscore_literally(service: ServiceProcess) -> None:
    addresses = ["lit_x@example.org", "litax@example.org", "lit50%off@example.org"]
    with api(service) as client:
        for address in addresses:
            response = client.put(f"/v1/suppressions/{address.replace('%', '%25')}")
            assert response.status_code == 200, response.text
            assert response.json()["email"] == address
        assert emails(listed(client, email="lit_x")) == ["lit_x@example.org"]
        assert emails(listed(client, email="%")) == ["lit50%off@example.org"]
        assert emails(listed(client, email="lit%")) == []  # not "lit, then anything"
        assert emails(listed(client, email="LIT")) == sorted(addresses)  # case-insensitive


def test_pages_follow_the_next_cursor(service: ServiceProcess) -> None:
    addresses = [f"page{n}@example.org" for n in range(5)]
    with api(service) as client:
        for address in reversed(addresses):
            assert client.put(f"/v1/suppressions/{address}").status_code == 200
        seen: list[str] = []
        pages = 0
        params: dict[str, Any] = {"email": "page", "limit": 2}
        while True:
            page = listed(client, **params)
            pages += 1
            seen += emails(page)
            if page["next"] is None:
                break
            assert page["next"] == seen[-1]
            params["after"] = page["next"]
        assert seen == addresses
        assert pages == 3
        for limit in ("0", "1001", "ten", "-1"):
            response = client.get("/v1/suppressions", params={"limit": limit})
            assert response.status_code == 400, limit
            assert "limit" in response.json()["error"]


def test_invalid_input_is_refused(service: ServiceProcess) -> None:
    with api(service) as client:
        for bad in ("not-an-address", "two@@example.org", "a@b@c", "x@localhost", " "):
            response = client.put(f"/v1/suppressions/{bad}", json={"reason": "x"})
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["error"].startswith("Invalid email address")
            assert client.delete(f"/v1/suppressions/{bad}").status_code == 400
        for reason in ("", "   ", "r" * 501, 42, None):
            response = client.put("/v1/suppressions/ok@example.org", json={"reason": reason})
            assert response.status_code == 400, (reason, response.text)
        not_json = client.put(
            "/v1/suppressions/ok@example.org",
            content=b"reason=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert not_json.status_code == 415
        for body in (b"[1]", b"{"):
            response = client.put(
                "/v1/suppressions/ok@example.org",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400, body
        assert "ok@example.org" not in emails(listed(client, email="ok@"))


def test_the_api_key_is_required(service: ServiceProcess) -> None:
    expectations = {
        None: "Missing X-API-KEY header",
        "": "Empty API Key",
        "wrong": "Invalid API Key",
    }
    for key, message in expectations.items():
        headers = {} if key is None else {"X-API-KEY": key}
        with httpx.Client(
            base_url=service.url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            for method, path in (
                ("GET", "/v1/suppressions"),
                ("PUT", "/v1/suppressions/keyless@example.org"),
                ("DELETE", "/v1/suppressions/keyless@example.org"),
                ("POST", "/v1/topics/any/retry"),
            ):
                response = client.request(method, path)
                assert response.status_code == 401, (key, method, path)
                assert response.json() == {"error": message}
    with api(service) as client:
        assert "keyless@example.org" not in emails(listed(client, email="keyless"))


def test_a_suppressed_address_is_not_sent_until_its_entry_is_deleted(
    service: ServiceProcess,
) -> None:
    address = "paused@example.org"
    with api(service) as client:
        assert client.put(f"/v1/suppressions/{address}").status_code == 200
        first = submit(client, topic="paused-1", emails=[address])
        wait_topic(client, "paused-1", status="Suppressed", count=1, timeout=30)
        assert client.delete(f"/v1/suppressions/{address}").status_code == 200
        second = submit(client, topic="paused-2", emails=[address.upper()])
        wait_topic(client, "paused-2", status="Sent", count=1, timeout=30)
        (suppressed,) = message_details(client, first)
        (sent,) = message_details(client, second)
    assert suppressed["status"] == "Suppressed"
    assert suppressed["message_id"] is None
    assert sent["status"] == "Sent"


def test_a_refused_request_does_not_stall_the_next_one_on_its_connection(
    service: ServiceProcess,
) -> None:
    """Clients keep connections alive; an error answered before the request body was read
    (here: a 400 for the address, before the JSON body is looked at) must not leave the
    connection unable to serve the next request."""
    with httpx.Client(base_url=service.url, headers={"X-API-KEY": API_KEY}, timeout=5) as client:
        for attempt in range(20):
            refused = client.put("/v1/suppressions/not-an-address", json={"reason": "x"})
            assert refused.status_code == 400
            try:
                following = client.get("/v1/suppressions", params={"limit": 1})
            except httpx.HTTPError as exc:
                pytest.fail(f"request {attempt} after a refused PUT failed: {exc!r}")
            assert following.status_code == 200


# --- retry of failed emails --------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("retry"),
        API_KEY=API_KEY,
        SENDER_BACKEND="memory",
        MEMORY_THROTTLE_RATE="1.0",
        MAX_ATTEMPTS="1",
        MAX_SEND_PER_SECOND="100",
    ) as running:
        yield running


def test_retry_requeues_exhausted_failures_and_never_permanent_ones(
    failing_service: ServiceProcess,
) -> None:
    rejected = [f"reject{n}@example.org" for n in range(3)]
    throttled = [f"busy{n}@example.org" for n in range(5)]
    topic = "retry-me"
    with api(failing_service) as client:
        ids = submit(client, topic=topic, emails=[*rejected, *throttled])
        wait_topic(client, topic, status="Failed", count=8, timeout=30)
        before = {d["email"]: d for d in message_details(client, ids)}
        for email in rejected:
            assert before[email]["failure_kind"] == "permanent", before[email]
        for email in throttled:
            assert before[email]["failure_kind"] == "exhausted", before[email]
            assert before[email]["attempts"] == 1

        # One throttled address is suppressed meanwhile: requeued, then ends Suppressed.
        assert client.put("/v1/suppressions/busy4@example.org").status_code == 200

        response = client.post(f"/v1/topics/{topic}/retry")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok", "requeued": len(throttled)}

        def retried() -> dict[str, dict[str, Any]] | None:
            details = {d["email"]: d for d in message_details(client, ids)}
            done = all(
                details[email]["updated_at"] != before[email]["updated_at"]
                and details[email]["status"] in ("Failed", "Suppressed")
                for email in throttled
            )
            return details if done else None

        after = wait_for(retried, timeout=30, what="the requeued emails to be attempted again")
        for email in rejected:
            assert after[email] == before[email]  # untouched: permanent failures stay
        for email in throttled[:-1]:
            assert after[email]["status"] == "Failed"
            assert after[email]["failure_kind"] == "exhausted"
            assert after[email]["attempts"] == 1  # a fresh set of attempts, not a 2nd of 1
        assert after["busy4@example.org"]["status"] == "Suppressed"
        counts = client.get(f"/v1/topics/{topic}").json()["request_counts"]
        assert counts["Failed"] == 7
        assert counts["Suppressed"] == 1

        # Nothing of an unknown topic, and only the retryable ones again.
        assert client.post("/v1/topics/no-such-topic/retry").json()["requeued"] == 0
        assert client.post(f"/v1/topics/{topic}/retry").json()["requeued"] == 4
