"""``sesender migrate-store``: from one instance on SQLite to PostgreSQL, nothing lost.

A real service runs on a SQLite file and sends part of a topic; while it runs, the copy is
refused. After SIGTERM the copy runs; a service on PostgreSQL then reports the same statistics,
details, suppressions and cancellations, accepts the same API key (a kept service secret), and
sends the rest of the queue; the webhook endpoint moves with its secret and keeps receiving
(verified with ``standardwebhooks``), its event and attempt ids continuing after the copied ones.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests import postgres_support
from tests.e2e.harness import (
    ServiceProcess,
    console_script,
    submit,
    topic_counts,
    wait_for,
    wait_topic,
)
from tests.e2e.webhook_support import WebhookReceiver

pytestmark = pytest.mark.e2e


def sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def run_migrate(source: Path, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), "migrate-store", "--from", f"sqlite:{source}", "--to", target],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


HOOKS = {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_POLL_SECONDS": "0.2"}


def sent_events(receiver: WebhookReceiver) -> dict[object, str]:
    """Request id to event id of the ``email.sent`` deliveries received."""
    return {d.payload["data"]["request_id"]: d.event_id for d in receiver.received("/moved")}


def test_a_sqlite_database_moves_to_postgresql(
    tmp_path: Path, start_service: Callable[..., ServiceProcess], receiver: WebhookReceiver
) -> None:
    database = tmp_path / "sesender.db"
    service = start_service(SENDER_BACKEND="memory", MAX_SEND_PER_SECOND="1000", **HOOKS)
    with service.client() as client:
        hook = client.post(
            "/v1/webhooks", json={"url": receiver.url("/moved"), "event_types": ["email.sent"]}
        )
        assert hook.status_code == 201, hook.text
        receiver.secrets["/moved"] = hook.json()["secret"]
        old_key = client.post("/v1/api-keys", json={"name": "app", "scopes": ["read"]})
        assert old_key.status_code == 201, old_key.text
        sent = submit(client, topic="done", emails=[f"d{i}@example.com" for i in range(30)])
        wait_topic(client, "done", count=30, timeout=20)
        assert client.put("/v1/suppressions/blocked@example.com").status_code in (200, 201)
        suppressions = client.get("/v1/suppressions").json()
        scheduled = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {
                        "topic_id": "later",
                        "emails": [f"l{i}@example.com" for i in range(5)],
                        "subject": "s",
                        "content": "<p>later</p>",
                    }
                ],
                "scheduled_at": "2099-01-01T00:00:00+00:00",
            },
        )
        assert scheduled.status_code == 200, scheduled.text
        assert client.delete("/v1/topics/gone").status_code == 200
        before = {topic: topic_counts(client, topic) for topic in ("done", "later")}
        detail = client.get(f"/v1/messages/{sent[0]}").json()
        wait_for(lambda: len(sent_events(receiver)) == 30, timeout=20, what="webhooks on SQLite")

    with postgres_support.temporary_database("sesender_move") as target:
        refused = run_migrate(database, target)
        assert refused.returncode == 1
        assert "in use" in refused.stderr
        assert service.stop() == 0

        copied = run_migrate(database, target)
        assert copied.returncode == 0, copied.stderr
        assert "requests 35" in copied.stdout
        again = run_migrate(database, target)
        assert again.returncode == 1
        assert "already holds emails" in again.stderr

        secrets = sqlite_rows(database, "SELECT name, value FROM service_secrets ORDER BY name")
        assert secrets  # the generated tracking secret: every link sent is signed with it
        with psycopg.connect(target) as connection:
            assert (
                connection.execute(
                    "SELECT name, value FROM service_secrets ORDER BY name"
                ).fetchall()
                == secrets
            )
        moved = start_service(SENDER_BACKEND="memory", DATABASE_URL=target, **HOOKS)
        with moved.client() as client:
            assert {t: topic_counts(client, t) for t in ("done", "later")} == before
            assert client.get(f"/v1/messages/{sent[0]}").json() == detail
            assert client.get("/v1/suppressions").json() == suppressions
            # Ids continue after the copied ones.
            more = submit(client, topic="new", emails=["n@example.com"])
            assert more[0] == 36
            wait_for(lambda: topic_counts(client, "new").get("Sent") == 1, timeout=20, what="sent")
            (endpoint,) = client.get("/v1/webhooks").json()["webhooks"]
            assert endpoint["id"] == hook.json()["id"]
            # The moved endpoint signs with its copied secret; the new event's row id follows
            # the copied ones (a clash would fail the outcome's transaction: nothing delivered).
            wait_for(lambda: 36 in sent_events(receiver), timeout=20, what="webhook on PostgreSQL")
            assert receiver.rejected == []
            assert len(set(sent_events(receiver).values())) == 31
            with psycopg.connect(target) as connection:
                ids = connection.execute(
                    "SELECT MIN(id), MAX(id), COUNT(*) FROM webhook_events"
                ).fetchone()
            assert ids == (1, 31, 31)
            # The copied key still works, and a new key's id follows it (no identity clash).
            key = old_key.json()["key"]
            assert client.get("/v1/topics", headers={"X-API-KEY": key}).status_code == 200
            new_key = client.post("/v1/api-keys", json={"name": "new", "scopes": ["read"]})
            assert new_key.status_code == 201, new_key.text
            assert new_key.json()["id"] == old_key.json()["id"] + 1
        moved.kill()
