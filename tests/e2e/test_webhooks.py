"""Outbound webhooks end to end: the real service as a process, a receiver on loopback that
verifies every delivery with the ``standardwebhooks`` package (tests/e2e/webhook_support.py).

- a topic of 1,000 emails with bounces, complaints, deliveries, opens and clicks injected through
  signed SNS notifications, plus suppressed and stopped emails: the receiver gets exactly the
  events that happened, each once (by event id), with the right details;
- a receiver that answers 500 for a while, then recovers, gets everything; the attempts are
  listed; a rotated secret signs beside the old one; the test event arrives;
- a receiver that hangs holds only its own lane: sending and another endpoint go on;
- 410 Gone disables the endpoint and says why;
- SIGKILL during delivery loses no event (a repeat carries the same event id);
- private, loopback, metadata addresses and names that resolve to them are refused;
- on PostgreSQL, two instances on one database deliver every event once between them (claims
  under ``FOR UPDATE SKIP LOCKED``), a bounce saying the address is now suppressed.

One service process is shared by the first four (module scope; each test filters the receiver's
deliveries by its own topics and endpoints); the crash and refusal tests start their own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import postgres_support
from tests.e2e.harness import (
    ServiceProcess,
    base_env,
    console_script,
    submit,
    wait_for,
    wait_topic,
)
from tests.e2e.sns_support import (
    LOOPBACK_PATTERN,
    LoopbackServer,
    SnsMinter,
    post_sns,
    running_service,
)
from tests.e2e.webhook_support import Behaviour, Delivery, WebhookReceiver, ses_message

pytestmark = pytest.mark.e2e

CONCURRENCY = 4


def webhook_env(**overrides: str) -> dict[str, str]:
    env = {
        "SENDER_BACKEND": "memory",
        "MAX_SEND_PER_SECOND": "1000",
        "SNS_CERT_URL_PATTERN": LOOPBACK_PATTERN,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_CONCURRENCY": str(CONCURRENCY),
        "WEBHOOK_POLL_SECONDS": "0.2",
        "WEBHOOK_TIMEOUT_SECONDS": "60",
        "WEBHOOK_RETRY_SCHEDULE": "0.2,0.4,0.8,1,1,1,1,1,1,1,1,1",
        # The first test injects 4 % bounces and 2 % complaints on purpose: the reputation guard
        # (tested in test_reputation_guard.py) would pause the shared service's sending for the
        # tests after it.
        "GUARD_ENABLED": "false",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(
    cert_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with running_service(tmp_path_factory.mktemp("webhooks"), **webhook_env()) as running:
        yield running


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with service.client() as opened:
        yield opened


def create_endpoint(
    client: httpx.Client,
    receiver: WebhookReceiver,
    path: str,
    behaviour: Behaviour | None = None,
    **fields: Any,
) -> dict[str, Any]:
    receiver.behaviours[path] = behaviour or Behaviour()
    response = client.post("/v1/webhooks", json={"url": receiver.url(path), **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["secret"].startswith("whsec_")
    receiver.secrets[path] = body["secret"]
    return body


def key(delivery: Delivery) -> tuple[str, object]:
    data = delivery.payload["data"]
    return delivery.event_type, data.get("request_id", data.get("topic_id"))


def unique(deliveries: list[Delivery]) -> dict[str, Delivery]:
    return {delivery.event_id: delivery for delivery in deliveries}


def test_every_event_of_a_topic_arrives_once_verified_with_its_details(
    client: httpx.Client, receiver: WebhookReceiver, minter: SnsMinter
) -> None:
    create_endpoint(client, receiver, "/all", description="everything")
    emails = [f"user{i}@example.com" for i in range(1000)]
    ids = list(submit(client, topic="big", emails=emails))
    wait_topic(client, "big", count=1000, timeout=60)
    address = dict(zip(ids, emails, strict=True))

    def inject(message: str) -> None:
        response = post_sns(client, minter.notification(message))
        assert response.status_code == 200, response.text

    def ses(kind: str, request_id: int, fmt: str = "event", **options: Any) -> None:
        response = post_sns(
            client,
            minter.ses_notification(
                kind,  # type: ignore[arg-type]
                fmt,  # type: ignore[arg-type]
                ses_message_id=f"unknown-{request_id}",
                recipient=address[request_id],
                tags={"sesender_request_id": [str(request_id)]},
                **options,
            ),
        )
        assert response.status_code == 200, response.text

    bounced, complained, delivered = ids[:40], ids[40:60], ids[100:250]
    opened, clicked = ids[300:380], ids[400:430]
    for request_id in bounced:
        ses("bounce", request_id, bounce_type="Permanent")
    for request_id in complained:
        ses("complaint", request_id)
    for request_id in delivered:
        ses("delivery", request_id)
    for request_id in [*opened, *opened[:10]]:  # ten opened twice: two events each
        inject(ses_message("Open", request_id=request_id, recipient=address[request_id]))
    for request_id in clicked:
        link = f"https://example.com/offer/{request_id}"
        message = ses_message("Click", request_id=request_id, recipient=address[request_id])
        inject(message.replace('"timestamp": "2026-01-15T10:00:00.000Z"}', f'"link": "{link}"}}'))

    # Bounced and complained addresses are suppressed now: sending to them again suppresses.
    again = list(submit(client, topic="again", emails=emails[:5]))
    wait_topic(client, "again", status="Suppressed", count=5, timeout=30)
    later = client.post(
        "/v1/messages",
        json={
            "messages": [
                {
                    "topic_id": "later",
                    "emails": emails[900:903],
                    "subject": "s",
                    "content": "<p>later</p>",
                }
            ],
            "scheduled_at": "2099-01-01 00:00:00",
        },
    ).json()
    later_ids = list(range(later["first_request_id"], later["first_request_id"] + 3))
    assert client.delete("/v1/topics/later").json()["stopped"] == 3

    expected: Counter[tuple[str, object]] = Counter()
    expected.update(("email.sent", i) for i in ids)
    expected.update(("email.bounced", i) for i in bounced)
    expected.update(("email.complained", i) for i in complained)
    expected.update(("email.delivered", i) for i in delivered)
    expected.update(("email.opened", i) for i in [*opened, *opened[:10]])
    expected.update(("email.clicked", i) for i in clicked)
    expected.update(("email.suppressed", i) for i in again)
    expected.update(("email.stopped", i) for i in later_ids)
    expected.update([("topic.completed", "big"), ("topic.completed", "again")])
    expected.update([("topic.completed", "later")])
    ours = {"big", "again", "later"}

    def mine() -> dict[str, Delivery]:
        return {
            event_id: delivery
            for event_id, delivery in unique(receiver.received("/all")).items()
            if delivery.payload["data"].get("topic_id") in ours
        }

    def complete() -> bool:
        return sum(Counter(key(d) for d in mine().values()).values()) >= expected.total()

    wait_for(complete, timeout=90, what="every event of the topics at the receiver")
    got = mine()
    assert Counter(key(d) for d in got.values()) == expected
    assert receiver.rejected == []
    by_key = {key(d): d.payload for d in got.values()}
    bounce = by_key[("email.bounced", bounced[0])]
    assert bounce["data"]["bounce_type"] == "Permanent"
    assert bounce["data"]["suppressed"] is True
    assert bounce["data"]["email"] == address[bounced[0]]
    assert bounce["data"]["topic_id"] == "big"
    assert by_key[("email.complained", complained[0])]["data"]["suppressed"] is True
    assert by_key[("email.clicked", clicked[3])]["data"]["link"] == (
        f"https://example.com/offer/{clicked[3]}"
    )
    sent = by_key[("email.sent", ids[7])]
    assert sent["data"]["message_id"]  # the SES (here: memory backend) message id
    assert sent["id"].startswith("evt_")
    assert sent["timestamp"].endswith("Z")
    # The endpoint as the API shows it: healthy, nothing pending or failed, no secret.
    (listed,) = [
        w for w in client.get("/v1/webhooks").json()["webhooks"] if w["url"].endswith("/all")
    ]
    assert listed["status"] == "healthy"
    assert listed["last_error"] is None
    assert "secret" not in listed
    assert "whsec_" not in str(listed)


def test_a_failing_receiver_gets_everything_once_it_recovers(
    service: ServiceProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = create_endpoint(
        client, receiver, "/flaky", Behaviour(failures=25), event_types=["email.sent"]
    )
    ids = list(submit(client, topic="flaky", emails=[f"f{i}@example.com" for i in range(20)]))

    def all_arrived() -> bool:
        return {d.payload["data"]["request_id"] for d in receiver.received("/flaky")} == set(ids)

    wait_for(all_arrived, timeout=60, what="every event after the receiver recovered")
    assert len(unique(receiver.received("/flaky"))) == 20

    def recorded() -> list[dict[str, Any]] | None:  # attempts are recorded after the answer
        attempts: list[dict[str, Any]] = client.get(
            f"/v1/webhooks/{endpoint['id']}/attempts"
        ).json()["attempts"]
        return attempts if sum(a["outcome"] == "delivered" for a in attempts) >= 20 else None

    attempts = wait_for(recorded, timeout=30, what="the attempts recorded")
    outcomes = Counter(a["outcome"] for a in attempts)
    assert outcomes["retry"] >= 20
    assert outcomes["delivered"] == 20
    failed = next(a for a in attempts if a["outcome"] == "retry")
    assert failed["status_code"] == 500
    assert failed["error"] == "HTTP 500: receiver is failing on purpose"
    shown = client.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["status"] == "healthy"
    assert shown["last_error"].startswith("HTTP 500")

    metrics = client.get("/metrics").text
    delivered = re.search(
        r'^sesender_webhook_attempts_total\{outcome="delivered"\} (\S+)$', metrics, re.M
    )
    assert delivered is not None
    assert float(delivered.group(1)) >= 20
    assert re.search(r'^sesender_webhook_attempts_total\{outcome="retry"\} [1-9]', metrics, re.M)

    # Rotation: the new secret signs, the old one beside it for 24 hours.
    rotated = client.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret").json()
    assert rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret_expires_at"]
    receiver.secrets["/flaky"] = rotated["secret"]
    test = client.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert test.status_code == 202
    event_id = test.json()["event_id"]
    arrived = wait_for(
        lambda: unique(receiver.received("/flaky")).get(event_id), timeout=30, what="test event"
    )
    assert arrived.event_type == "webhook.test"
    assert arrived.signatures == 2
    assert receiver.rejected == []
    # Secrets are in the creation and rotation answers only: never logged, never listed.
    for secret in (endpoint["secret"], rotated["secret"]):
        assert not any(secret in line for line in service.raw_lines)
        assert secret not in client.get("/v1/webhooks").text
        assert secret not in client.get(f"/v1/webhooks/{endpoint['id']}").text


def test_a_hanging_receiver_delays_neither_sending_nor_other_endpoints(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    create_endpoint(client, receiver, "/hang", Behaviour(hang=True), event_types=["email.sent"])
    create_endpoint(client, receiver, "/fine", event_types=["email.sent"])
    ids = set(submit(client, topic="hang", emails=[f"h{i}@example.com" for i in range(300)]))
    wait_topic(client, "hang", count=300, timeout=60)

    def fine_has_all() -> bool:
        return {d.payload["data"]["request_id"] for d in receiver.received("/fine")} >= ids

    wait_for(fine_has_all, timeout=60, what="the other endpoint's events")
    # All the while the hanging receiver holds its lane's posts: still hanging, none answered.
    assert receiver.hanging == CONCURRENCY
    assert receiver.received("/hang") == []
    receiver.behaviours["/hang"].release.set()


def test_410_gone_disables_the_endpoint(client: httpx.Client, receiver: WebhookReceiver) -> None:
    endpoint = create_endpoint(
        client, receiver, "/gone", Behaviour(status=410), event_types=["email.sent"]
    )
    submit(client, topic="gone", emails=["g@example.com"])

    def disabled() -> dict[str, Any] | None:
        shown: dict[str, Any] = client.get(f"/v1/webhooks/{endpoint['id']}").json()
        return shown if shown["status"] == "disabled" else None

    shown = wait_for(disabled, timeout=30, what="the endpoint disabled")
    assert shown["disabled_reason"] == "the endpoint answered 410 Gone"
    assert shown["enabled"] is False
    assert shown["pending"] == 1
    # Enabled again, it gets the event it did not take (the receiver takes it now).
    receiver.behaviours["/gone"].status = 200
    patched = client.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": True})
    assert patched.status_code == 200
    assert patched.json()["disabled_reason"] is None
    wait_for(lambda: receiver.received("/gone"), timeout=30, what="delivery after enabling")


def test_sigkill_during_delivery_loses_no_event(tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    env = base_env(tmp_path, **webhook_env(WEBHOOK_CONCURRENCY="2"))
    first = ServiceProcess(tmp_path, env).start()
    second: ServiceProcess | None = None
    stack = ExitStack()
    try:
        client = stack.enter_context(first.client())
        create_endpoint(
            client, receiver, "/slow", Behaviour(), event_types=["email.sent", "topic.completed"]
        )
        receiver.behaviours["/slow"] = Behaviour(status=200)
        ids = set(submit(client, topic="crash", emails=[f"c{i}@example.com" for i in range(400)]))
        wait_for(
            lambda: len(receiver.received("/slow")) >= 40, timeout=60, what="deliveries under way"
        )
        first.signal(signal.SIGKILL)
        first.wait(timeout=15)
        before = len(receiver.received("/slow"))
        assert before < 401, "everything was delivered before the kill: nothing was tested"
        second = ServiceProcess(tmp_path, env).start()

        def everything() -> bool:
            got = {d.payload["data"].get("request_id") for d in receiver.received("/slow")}
            return got >= ids | {None}  # None: the topic.completed event

        wait_for(everything, timeout=90, what="every event after the restart")
        deliveries = receiver.received("/slow")
        per_email: dict[object, set[str]] = {}
        for delivery in deliveries:
            per_email.setdefault(key(delivery), set()).add(delivery.event_id)
        # Each event once or more, never under two ids: a repeat is the same event.
        assert all(len(event_ids) == 1 for event_ids in per_email.values()), per_email
        assert len(per_email) == 401
        assert receiver.rejected == []
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
        receiver.stop()
        stack.close()


def test_private_loopback_and_metadata_urls_are_refused(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, base_env(tmp_path, SENDER_BACKEND="memory")).start()
    stack = ExitStack()
    try:
        client = stack.enter_context(service.client())
        refused = {
            "http://127.0.0.1:8080/hook": "127.0.0.1 is a loopback address",
            "http://10.1.2.3/hook": "10.1.2.3 is a private address",
            "http://169.254.169.254/latest/meta-data/": "a cloud metadata address",
            "http://[::1]/hook": "::1 is a loopback address",
            "http://[::ffff:192.168.0.1]/hook": "a private address",
            "http://localhost:9/hook": "localhost resolves to",
            "ftp://example.com/hook": "http or https",
            "http://user:pass@example.com/hook": "credentials",
        }
        for url, reason in refused.items():
            response = client.post("/v1/webhooks", json={"url": url})
            assert response.status_code == 400, (url, response.text)
            assert reason in response.json()["error"], (url, response.text)
        bad_types = client.post(
            "/v1/webhooks", json={"url": "https://93.184.216.34/", "event_types": ["email.nope"]}
        )
        assert bad_types.status_code == 400
        assert "email.nope" in bad_types.json()["error"]
        assert client.get("/v1/webhooks").json() == {"webhooks": []}
        assert client.get("/v1/webhooks/ep_nope").status_code == 404
        assert service.stop() == 0
    finally:
        service.kill()
        stack.close()


def test_the_cli_creates_lists_shows_and_disables_endpoints(
    service: ServiceProcess, receiver: WebhookReceiver
) -> None:
    def cli(*args: str) -> str:
        completed = subprocess.run(
            [*console_script(), "webhooks", *args],
            env={**os.environ, "SESENDER_URL": service.url, "API_KEY": service.api_key},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    receiver.behaviours["/cli"] = Behaviour(failures=1000, failure_status=503)
    created = cli("create", receiver.url("/cli"), "--events", "email.sent", "--description", "cli")
    endpoint_id = created.split()[1]
    secret = created.splitlines()[1].rsplit(" ", 1)[1]
    assert secret.startswith("whsec_")
    receiver.secrets["/cli"] = secret
    assert "queued test event evt_" in cli("test", endpoint_id)

    with service.client() as client:  # the CLI reads what the API shows: wait through the API
        wait_for(
            lambda: client.get(f"/v1/webhooks/{endpoint_id}").json()["last_error"],
            timeout=30,
            what="the endpoint's first failed attempt",
        )
    (line,) = [row for row in cli("list").splitlines() if row.startswith(endpoint_id)]
    assert line.split("\t")[1:4] == ["failing", "1", "0"]  # status, pending, failed
    assert line.endswith("HTTP 503: receiver is failing on purpose")
    assert secret not in line
    shown = cli("show", endpoint_id)
    assert "status: failing" in shown
    assert "last_error: HTTP 503: receiver is failing on purpose" in shown
    assert re.search(r"\twebhook\.test\t\d+\tretry\t503\tHTTP 503: receiver is failing", shown)
    assert "is disabled" in cli("disable", endpoint_id)
    assert "disabled_reason: disabled through the API" in cli("show", endpoint_id)
    assert f"deleted {endpoint_id}" in cli("delete", endpoint_id)


def test_a_deliverer_process_beside_a_service_that_does_not_deliver(tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    service_env = base_env(tmp_path, **webhook_env(WEBHOOK_DELIVERY_ENABLED="false"))
    main = ServiceProcess(tmp_path, service_env).start()
    deliverer: subprocess.Popen[bytes] | None = None
    stack = ExitStack()
    try:
        client = stack.enter_context(main.client())
        create_endpoint(client, receiver, "/apart", event_types=["email.sent"])
        ids = set(submit(client, topic="apart", emails=[f"a{i}@example.com" for i in range(50)]))
        wait_topic(client, "apart", count=50, timeout=60)
        assert receiver.received("/apart") == []  # recorded, not delivered: nobody delivers
        deliverer = process = subprocess.Popen(
            [*console_script(), "deliver-webhooks"],
            cwd=tmp_path,
            env={**os.environ, **base_env(tmp_path, **webhook_env())},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: {d.payload["data"]["request_id"] for d in receiver.received("/apart")} == ids,
            timeout=60,
            what="every event from the deliverer process",
        )
        assert receiver.rejected == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert main.stop() == 0
    finally:
        if deliverer is not None and deliverer.poll() is None:
            deliverer.kill()
            deliverer.wait(timeout=10)
        main.kill()
        receiver.stop()
        stack.close()


def delivered_count(service: ServiceProcess) -> float:
    """The instance's ``sesender_webhook_attempts_total{outcome="delivered"}``."""
    with service.client() as client:
        metrics = client.get("/metrics").text
    found = re.search(
        r'^sesender_webhook_attempts_total\{outcome="delivered"\} (\S+)$', metrics, re.M
    )
    return 0.0 if found is None else float(found.group(1))


@pytest.mark.parametrize("instances", [2])
def test_on_postgresql_instances_share_the_queue_and_deliver_each_event_once(
    tmp_path: Path, receiver: WebhookReceiver, minter: SnsMinter, instances: int
) -> None:
    """The webhook tables, triggers and claims of the PostgreSQL store, end to end: several
    instances on one database, events written by the outcome trigger and the feedback path,
    every delivery verified by ``standardwebhooks``, none made twice (by event id, and by the
    instances' own delivered counts)."""
    with postgres_support.temporary_database("sesender_e2e_webhooks") as database:
        services: list[ServiceProcess] = []
        try:
            for number in range(instances):
                workdir = tmp_path / f"i{number}"
                workdir.mkdir()
                env = base_env(
                    workdir, DATABASE_URL=database, INSTANCE_ID=f"hooks{number}", **webhook_env()
                )
                services.append(ServiceProcess(workdir, env).start())
            first, second = services[0], services[-1]
            with first.client() as client:
                create_endpoint(
                    client,
                    receiver,
                    "/pg",
                    event_types=["email.sent", "email.bounced", "topic.completed"],
                )
                emails = [f"pg{i}@example.com" for i in range(150)]
                ids = list(submit(client, topic="pg-hooks", emails=emails))
                wait_topic(client, "pg-hooks", count=len(ids), timeout=60)
            with second.client() as client:
                response = post_sns(
                    client,
                    minter.ses_notification(
                        "bounce",
                        "event",
                        ses_message_id="unknown-pg",
                        recipient=emails[0],
                        tags={"sesender_request_id": [str(ids[0])]},
                        bounce_type="Permanent",
                    ),
                )
                assert response.status_code == 200, response.text
            expected: Counter[tuple[str, object]] = Counter(("email.sent", i) for i in ids)
            expected.update([("email.bounced", ids[0]), ("topic.completed", "pg-hooks")])

            def complete() -> bool:
                got = unique(receiver.received("/pg")).values()
                return sum(Counter(key(d) for d in got).values()) >= expected.total()

            wait_for(complete, timeout=60, what="every event from the PostgreSQL instances")
            deliveries = receiver.received("/pg")
            assert receiver.rejected == []
            got = unique(deliveries)
            assert Counter(key(d) for d in got.values()) == expected
            assert len(deliveries) == len(got), "an event was delivered twice"
            by_key = {key(d): d.payload["data"] for d in got.values()}
            bounce = by_key[("email.bounced", ids[0])]
            assert bounce["suppressed"] is True
            assert bounce["email"] == emails[0]
            # Each instance counts what it delivered: together, every event exactly once.
            wait_for(
                lambda: sum(delivered_count(s) for s in services) >= len(got),
                timeout=30,
                what="the attempts recorded",
            )
            assert sum(delivered_count(s) for s in services) == len(got)
            for service in services:
                assert service.stop() == 0
        finally:
            for service in services:
                service.kill()
