"""Metrics and Sentry, observed from outside the running process."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ServiceProcess, wait_for


def scrape(service: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with service.client() as client:
        response = client.get("/metrics", headers={"X-API-KEY": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_exactly_what_was_sent(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service(SENDER_BACKEND="memory", MAX_SEND_PER_SECOND="500")
    emails = [f"user{i}@example.com" for i in range(40)] + ["reject1@example.com"]
    with service.client() as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"topic_id": "m", "emails": emails, "subject": "s", "content": "<p>c</p>"}
                ]
            },
        )
        assert response.status_code == 200
        wait_for(
            lambda: client.get("/v1/topics/m").json()["request_counts"].get("Sent") == 40,
            timeout=20,
            what="40 sent",
        )
        wait_for(
            lambda: client.get("/v1/topics/m").json()["request_counts"].get("Failed") == 1,
            timeout=20,
            what="1 failed",
        )
        client.delete("/v1/topics/m")
    samples = wait_for(
        lambda: (
            (s := scrape(service))[("sesender_emails_total", (("outcome", "sent"),))] == 40 and s
        ),
        timeout=10,
        what="the sent counter",
    )
    assert samples[("sesender_emails_total", (("outcome", "failed_permanent"),))] == 1
    assert samples[("sesender_emails_total", (("outcome", "stopped"),))] == 0
    assert samples[("sesender_send_attempts_total", ())] == 41
    assert samples[("sesender_send_latency_seconds_count", ())] == 41
    assert samples[("sesender_rate_limit_per_second", ())] == 500
    assert samples[("sesender_channel_capacity", (("channel", "send"),))] == 10_000
    assert ("sesender_channel_depth", (("channel", "outcome"),)) in samples
    assert samples[("sesender_queued_emails", ())] == 0
    assert samples[("sesender_sending_paused", ())] == 0
    assert samples[("sesender_actor_up", (("actor", "scheduler"), ("state", "running")))] == 1
    assert (
        samples[
            (
                "sesender_http_requests_total",
                (("method", "POST"), ("route", "/v1/messages"), ("status", "200")),
            )
        ]
        == 1
    )
    assert service.stop() == 0


class FakeSentry:
    """A loopback Sentry ingestion endpoint that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                owner.envelopes.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def events(self) -> list[dict[str, object]]:
        found = []
        for envelope in list(self.envelopes):
            for line in envelope.split(b"\n"):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "exception" in item:
                    found.append(item)
        return found


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    sentry = FakeSentry()
    sentry.thread.start()
    yield sentry
    sentry.server.shutdown()
    sentry.server.server_close()


def drop(database: Path, table: str) -> None:
    connection = sqlite3.connect(database)
    connection.execute(f"DROP TABLE {table}")
    connection.commit()
    connection.close()


def test_sentry_gets_the_crash_and_the_500_without_addresses(
    start_service: Callable[..., ServiceProcess], fake_sentry: FakeSentry, tmp_path: Path
) -> None:
    service = start_service(
        SENDER_BACKEND="memory", SENTRY_DSN=fake_sentry.dsn, SCHEDULER_INTERVAL_SECONDS="0.2"
    )
    with service.client() as client:
        assert (
            client.post(
                "/v1/messages",
                json={
                    "messages": [
                        {
                            "topic_id": "ok",
                            "emails": ["first.person@example.com"],
                            "subject": "s",
                            "content": "c",
                        }
                    ]
                },
            ).status_code
            == 200
        )
        wait_for(
            lambda: client.get("/v1/topics/ok").json()["request_counts"].get("Sent") == 1,
            timeout=20,
        )
        # Break the database under the running service, in two steps. First the result
        # counters: topic statistics now fail (a 500), but nothing else uses that table.
        drop(tmp_path / "sesender.db", "topic_result_counts")
        response = client.get("/v1/topics/ok")
        assert response.status_code == 500
        assert response.json() == {"error": "Internal server error"}
        assert "Traceback" not in response.text
        # Then the status counters, which the claim's trigger needs: the scheduler's next poll
        # fails, and the actor crash takes the service down.
        drop(tmp_path / "sesender.db", "topic_counts")
    assert service.wait(timeout=20) == 1
    crash = service.find("crashed")
    assert crash is not None
    assert crash["actor"] == "scheduler"
    events = wait_for(lambda: len(fake_sentry.events()) >= 2 and fake_sentry.events(), timeout=10)
    tags = [event.get("tags", {}) for event in events]
    assert any(isinstance(t, dict) and t.get("actor") == "scheduler" for t in tags)
    assert any(isinstance(t, dict) and t.get("route") == "/v1/topics/<path:topic_id>" for t in tags)
    everything = b"".join(fake_sentry.envelopes)
    assert b"@example.com" not in everything
    assert b"person" not in everything
