"""Named API keys and senders per message, end to end against the real service process.

- The whole route table (sesender/http/scopes.py, the one table the auth hook and the OpenAPI
  description read): every route answers 403 to a valid key without the scope, 401 to a revoked
  or unknown key, and works with the right scope. The table must name exactly the operations the
  served OpenAPI description has, so a route added without a scope fails here too.
- Rotation while a client sends without pause: no request fails; the old key is refused at once
  here, and within a second on a second instance sharing the database.
- Senders: a ``from`` outside ALLOWED_SENDERS is a 400 and stores nothing; a key limited to some
  senders gets 403 for the others; the sender and Reply-To reach the written message; a ``send``
  key reads back only its own emails.
- With SES (the fake): emails of one content and several senders go in one bulk call per sender,
  and a sender SES refuses as unverified fails only its own emails, without pausing sending.
- Keys and revocations are in the database: a SIGKILL and a restart change neither.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesender.http.scopes import PUBLIC, ROUTE_SCOPES
from sesender.models import Scope
from tests import postgres_support
from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import (
    ServiceProcess,
    base_env,
    message_details,
    outbox_files,
    wait_for,
    wait_topic,
)

pytestmark = pytest.mark.e2e

DEFAULT_SENDER = "news@example.com"
ALLOWED = "example.org, billing@example.net"
HTML = "<html><body><p>Hello!</p></body></html>"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-keys")


@pytest.fixture(scope="module")
def service(workdir: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        workdir,
        base_env(
            workdir,
            AWS_SES_FROM_EMAIL=DEFAULT_SENDER,
            ALLOWED_SENDERS=ALLOWED,
            MAX_SEND_PER_SECOND="500",
            SCHEDULER_INTERVAL_SECONDS="0.2",
        ),
    ).start()
    yield process
    process.kill()


def create_key(admin: httpx.Client, name: str, *scopes: str, **extra: Any) -> dict[str, Any]:
    response = admin.post("/v1/api-keys", json={"name": name, "scopes": list(scopes), **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["key"].startswith(created["prefix"])
    return created


def message(topic: str, emails: list[str], **fields: Any) -> dict[str, Any]:
    return {"topic_id": topic, "emails": emails, "subject": "Hi", "content": HTML, **fields}


# -- the route table --------------------------------------------------------------------------


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def sample_path(rule: str, values: dict[str, str]) -> str:
    """A concrete path for ``rule``: known arguments get real values, others a harmless one."""

    def value(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        if name in values:
            return values[name]
        return "1" if converter == "int" else "sample"

    return re.sub(r"<(?:([^:<>]+):)?([^<>]+)>", value, rule)


def sample_body(method: str, rule: str) -> dict[str, Any] | None:
    if (method, rule) == ("POST", "/v1/messages"):
        return {"messages": [message("route-table", ["route@example.org"])]}
    if (method, rule) == ("POST", "/v1/api-keys"):
        return {"name": "made by the route table", "scopes": ["read"]}
    if method in ("POST", "PUT", "PATCH"):
        return {}
    return None


def test_every_route_answers_403_without_the_scope_401_when_revoked_or_unknown_else_works(
    service: ServiceProcess,
) -> None:
    with service.client() as admin:
        served = admin.get("/openapi.json").json()
        described = {
            (path, method.upper())
            for path, item in served["paths"].items()
            for method in item
            if method in HTTP_METHODS
        }
        table = {(openapi_path(rule), method) for method, rule in ROUTE_SCOPES}
        assert described == table, "ROUTE_SCOPES and the OpenAPI description must agree"

        keys = {
            frozenset({Scope.SEND}): create_key(admin, "sender", "send")["key"],
            frozenset({Scope.READ}): create_key(admin, "reader", "read")["key"],
            frozenset({Scope.ADMIN}): create_key(admin, "admin", "admin")["key"],
        }
        revoked = create_key(admin, "old", "admin")
        assert admin.delete(f"/v1/api-keys/{revoked['id']}").status_code == 200
        dead_keys = {"revoked": revoked["key"], "unknown": "ssk_" + "x" * 43}

        with httpx.Client(
            base_url=service.url, headers={"X-API-KEY": keys[frozenset({Scope.SEND})]}
        ) as sender:
            posted = sender.post(
                "/v1/messages", json={"messages": [message("route-table", ["own@example.org"])]}
            )
            assert posted.status_code == 200, posted.text
        own_id = str(posted.json()["first_request_id"])

        stack = contextlib.ExitStack()
        clients = {
            key: stack.enter_context(
                httpx.Client(base_url=service.url, headers={"X-API-KEY": key}, timeout=30)
            )
            for key in [*keys.values(), *dead_keys.values()]
        }
        with stack:
            checked = 0
            for (method, rule), access in sorted(ROUTE_SCOPES.items()):
                if access == PUBLIC:
                    continue
                body = sample_body(method, rule)
                for scopes, key in keys.items():
                    values = {
                        "request_id": own_id,
                        "topic_id": "route-table",
                        "email": "a@example.org",
                    }
                    if rule == "/v1/api-keys/<int:key_id>":
                        values["key_id"] = str(create_key(admin, "throwaway", "read")["id"])
                    path = sample_path(rule, values)
                    answer = clients[key].request(method, path, json=body)
                    if scopes & access:
                        assert answer.status_code not in (401, 403), (
                            method,
                            rule,
                            scopes,
                            answer.text,
                        )
                        assert answer.status_code < 500, (method, rule, scopes, answer.text)
                    else:
                        assert answer.status_code == 403, (method, rule, scopes, answer.text)
                        assert "lacks the scope" in answer.json()["error"]
                for what, key in dead_keys.items():
                    path = sample_path(rule, {"request_id": own_id, "key_id": "1"})
                    answer = clients[key].request(method, path, json=body)
                    assert answer.status_code == 401, (method, rule, what, answer.text)
                    assert answer.json() == {"error": "Invalid API Key"}
                checked += 1
        assert checked >= 15  # the non-public routes of today; more may come


def service_request(
    service: ServiceProcess, key: str, method: str, path: str, body: dict[str, Any] | None
) -> httpx.Response:
    with httpx.Client(base_url=service.url, headers={"X-API-KEY": key}, timeout=30) as client:
        return client.request(method, path, json=body)


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_without_a_failed_request_and_revocation_reaches_another_instance(
    service: ServiceProcess, workdir: Path
) -> None:
    with service.client() as admin:
        old = create_key(admin, "app v1", "send")
    current = {"key": old["key"]}
    statuses: Counter[int] = Counter()
    sent_with: Counter[str] = Counter()
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not stop.is_set():
                key = current["key"]
                answer = client.post(
                    "/v1/messages",
                    headers={"X-API-KEY": key},
                    json={"messages": [message("rotation", ["r@example.org"])]},
                )
                statuses[answer.status_code] += 1
                sent_with[key] += 1

    worker = threading.Thread(target=client_loop)
    worker.start()
    try:
        wait_for(lambda: sent_with[old["key"]] >= 20, timeout=30, what="requests with the old key")
        with service.client() as admin:
            new = create_key(admin, "app v2", "send")
            current["key"] = new["key"]  # the client moves to the new key
            wait_for(lambda: sent_with[new["key"]] >= 20, timeout=30, what="the new key in use")
            assert admin.delete(f"/v1/api-keys/{old['id']}").status_code == 200
            wait_for(lambda: sent_with[new["key"]] >= 40, timeout=30, what="more requests")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert set(statuses) == {200}, statuses
    refused = service_request(service, old["key"], "GET", "/v1/api-keys/current", None)
    assert refused.status_code == 401  # at once on the instance that revoked it

    # A second instance on the same database: a key made on the first works there, and is
    # refused there within a second of its revocation on the first.
    second = ServiceProcess(workdir, {**service.env, "SERVER_PORT": "0"}).start()
    try:
        with service.client() as admin:
            everywhere = create_key(admin, "on-every-instance", "read")
        answer = service_request(second, everywhere["key"], "GET", "/v1/api-keys/current", None)
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == "on-every-instance"
        with service.client() as admin:
            assert admin.delete(f"/v1/api-keys/{everywhere['id']}").status_code == 200
        wait_for(
            lambda: (
                service_request(
                    second, everywhere["key"], "GET", "/v1/api-keys/current", None
                ).status_code
                == 401
            ),
            timeout=2.5,  # the key ring re-reads every second; the rest is request time
            interval=0.05,
            what="the revoked key refused by the other instance",
        )
    finally:
        second.stop()

    with service.client() as admin:
        listed = {k["id"]: k for k in admin.get("/v1/api-keys?revoked=true").json()["api_keys"]}
    assert listed[old["id"]]["revoked_at"] is not None
    assert listed[new["id"]]["revoked_at"] is None
    assert listed[new["id"]]["last_used_at"] is not None
    assert "key" not in listed[new["id"]]


# -- senders ----------------------------------------------------------------------------------


def test_senders_are_checked_before_anything_is_stored_and_reach_the_message(
    service: ServiceProcess, workdir: Path
) -> None:
    with service.client() as admin:
        ready = admin.get("/ready").json()
        assert ready["sender_identities"] == [DEFAULT_SENDER, "example.org", "billing@example.net"]

        refused = admin.post(
            "/v1/messages",
            json={
                "messages": [
                    message("senders-refused", ["a@example.org"]),
                    message(
                        "senders-refused", ["b@example.org"], **{"from": "x@other-company.com"}
                    ),
                ]
            },
        )
        assert refused.status_code == 400, refused.text
        assert "not an allowed sender" in refused.json()["error"]
        # billing@example.net is allowed, not the rest of its domain.
        refused = admin.post(
            "/v1/messages",
            json={
                "messages": [
                    message("senders-refused", ["c@example.org"], **{"from": "ops@example.net"})
                ]
            },
        )
        assert refused.status_code == 400, refused.text
        assert admin.get("/v1/topics/senders-refused").json()["request_counts"] == {}

        limited = create_key(admin, "billing only", "send", senders=["billing@example.net"])
        bad = admin.post(
            "/v1/api-keys", json={"name": "x", "scopes": ["send"], "senders": ["other-company.com"]}
        )
        assert bad.status_code == 400, bad.text

    with httpx.Client(base_url=service.url, headers={"X-API-KEY": limited["key"]}) as billing:
        denied = billing.post(
            "/v1/messages",
            json={"messages": [message("senders-limited", ["d@example.org"])]},  # the default
        )
        assert denied.status_code == 403, denied.text
        accepted = billing.post(
            "/v1/messages",
            json={
                "messages": [
                    message(
                        "senders-limited",
                        ["e@example.org", "f@example.org"],
                        **{"from": "Billing <billing@example.net>", "reply_to": "help@example.net"},
                    )
                ]
            },
        )
        assert accepted.status_code == 200, accepted.text
        first = accepted.json()["first_request_id"]
        own = billing.get(f"/v1/messages/{first}")
        assert own.status_code == 200
        assert own.json()["from"] == "Billing <billing@example.net>"

    with service.client() as admin:
        wait_topic(admin, "senders-limited", count=2, timeout=30)
        other = admin.post(
            "/v1/messages", json={"messages": [message("senders-other", ["g@example.org"])]}
        ).json()["first_request_id"]
    # A send key reads its own emails only; the others do not exist for it.
    with httpx.Client(base_url=service.url, headers={"X-API-KEY": limited["key"]}) as billing:
        assert billing.get(f"/v1/messages/{other}").status_code == 404

    written = [message_from_bytes(path.read_bytes()) for path in outbox_files(workdir / "outbox")]
    billing_mail = [m for m in written if m["X-Sesender-Topic"] == "senders-limited"]
    assert len(billing_mail) == 2
    for mail in billing_mail:
        assert mail["From"] == "Billing <billing@example.net>"
        assert mail["Reply-To"] == "help@example.net"


# -- SES: grouping by sender, unverified senders ------------------------------------------------


def test_bulk_calls_group_by_sender_and_an_unverified_sender_fails_only_its_own_emails(
    start_service: Callable[..., ServiceProcess],
) -> None:
    with running_fake_ses("--unverified-sender", "unverified@example.org") as fake:
        service = start_service(
            **fake.service_env(
                API_KEY="e2e-senders-key", ALLOWED_SENDERS="example.org", SEND_BURST="100"
            )
        )
        recipients = {
            sender: [f"{sender.split('@')[0]}-{n}@example.net" for n in range(30)]
            for sender in ("news@example.com", "billing@example.org", "unverified@example.org")
        }
        with service.client() as client:
            answer = client.post(
                "/v1/messages",
                json={
                    "messages": [
                        message(
                            "by-sender",
                            emails,
                            **({} if sender == "news@example.com" else {"from": sender}),
                        )
                        for sender, emails in recipients.items()
                    ]
                },
            )
            assert answer.status_code == 200, answer.text
            wait_topic(client, "by-sender", count=60, timeout=60)
            wait_topic(client, "by-sender", status="Failed", count=30, timeout=60)
            first = answer.json()["first_request_id"]
            details = message_details(client, range(first, first + 90))
            ready = client.get("/ready").json()
        assert ready["sending"] == "active"
        failed = [d for d in details if d["status"] == "Failed"]
        assert {d["email"] for d in failed} == set(recipients["unverified@example.org"])
        assert {d["failure_kind"] for d in failed} == {"config"}
        assert all("not verified" in d["error"] for d in failed)

        sent = fake.messages()
        assert all(m["bulk"] for m in sent)
        by_sender: dict[str, set[str]] = {}
        calls: dict[int, set[str]] = {}
        for m in sent:
            by_sender.setdefault(m["from"], set()).add(m["to"])
            calls.setdefault(m["call"], set()).add(m["from"])
        assert by_sender == {
            "news@example.com": set(recipients["news@example.com"]),
            "billing@example.org": set(recipients["billing@example.org"]),
        }
        # One content, three senders: never two senders in one call, and calls still share.
        assert all(len(senders) == 1 for senders in calls.values()), calls
        per_call = Counter(m["call"] for m in sent)
        assert max(per_call.values()) > 1, per_call


def test_keys_and_revocations_outlive_a_crash(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service()
    with service.client() as admin:
        kept = create_key(admin, "kept", "read")
        gone = create_key(admin, "gone", "read")
        assert admin.delete(f"/v1/api-keys/{gone['id']}").status_code == 200
    service.kill()  # SIGKILL: nothing is flushed on the way out

    restarted = start_service()
    answer = service_request(restarted, kept["key"], "GET", "/v1/topics", None)
    assert answer.status_code == 200, answer.text
    assert (
        service_request(restarted, kept["key"], "DELETE", "/v1/topics/x", None).status_code == 403
    )
    assert service_request(restarted, gone["key"], "GET", "/v1/topics", None).status_code == 401
    with restarted.client() as admin:
        listed = admin.get("/v1/api-keys").json()["api_keys"]
    assert [key["name"] for key in listed] == ["kept"]


def test_on_postgresql_a_revocation_reaches_every_instance_within_a_second(
    tmp_path: Path,
) -> None:
    """Two instances on one PostgreSQL database: a key created on one works on the other, and
    its revocation on the first is refused by the second within the key ring's second."""
    with postgres_support.temporary_database("sesender_keys") as database:
        instances: list[ServiceProcess] = []
        try:
            for number in range(2):
                workdir = tmp_path / f"i{number}"
                workdir.mkdir()
                env = base_env(
                    workdir,
                    DATABASE_URL=database,
                    INSTANCE_ID=f"keys{number}",
                    AWS_SES_FROM_EMAIL=DEFAULT_SENDER,
                )
                instances.append(ServiceProcess(workdir, env).start())
            first, second = instances
            with first.client() as admin:
                key = create_key(admin, "one key on postgres", "send", senders=[DEFAULT_SENDER])
            assert service_request(second, key["key"], "GET", "/v1/topics", None).status_code == 403
            posted = httpx.post(
                f"{second.url}/v1/messages",
                headers={"X-API-KEY": key["key"]},
                json={"messages": [message("pg-keys", ["pg@example.org"])]},
                timeout=30,
            )
            assert posted.status_code == 200, posted.text
            own = posted.json()["first_request_id"]
            mine = service_request(first, key["key"], "GET", f"/v1/messages/{own}", None)
            assert mine.status_code == 200  # the key id stored with the email, seen from both
            with first.client() as admin:
                assert admin.delete(f"/v1/api-keys/{key['id']}").status_code == 200
            wait_for(
                lambda: (
                    service_request(
                        second, key["key"], "GET", "/v1/api-keys/current", None
                    ).status_code
                    == 401
                ),
                timeout=2.5,
                interval=0.05,
                what="the revoked key refused by the other instance",
            )
        finally:
            for instance in instances:
                instance.kill()
