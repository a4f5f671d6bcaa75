"""PostgreSQL stopped for 20 s mid-run and started again: the service answers 503 where it must,
recovers by itself, and nothing accepted is lost.

The database is a private server of this test (``tests.private_postgres``, started as an
unprivileged user on a free port): stopping the shared one would break every other test. The
service sends through the SES backend (bulk mode) to ``bench.fake_ses``, which keeps every message
with its request id, so a lost email (or a duplicate) shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import ServiceProcess, base_env, submit, topic_counts, wait_for
from tests.private_postgres import PrivateServer

pytestmark = pytest.mark.e2e

OUTAGE = 20.0
TOTAL = 3000


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    private = PrivateServer().init()
    private.start()
    try:
        yield private
    finally:
        private.remove()


def test_a_database_outage_is_503_then_recovered_with_nothing_lost(
    tmp_path: Path, server: PrivateServer
) -> None:
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE sesender")
    database = server.url.rsplit("/", 1)[0] + "/sesender"
    with running_fake_ses() as fake:
        env = base_env(tmp_path) | fake.service_env(
            DATABASE_URL=database, MAX_SEND_PER_SECOND="300", INSTANCE_LEASE_SECONDS="10"
        )
        service = ServiceProcess(tmp_path, env).start()
        try:
            with service.client() as client:
                ids = submit(client, topic="t", emails=[f"u{i}@example.com" for i in range(TOTAL)])
                wait_for(
                    lambda: fake.get("/_bench/stats")["bulk_entries"] >= TOTAL // 4,
                    timeout=30,
                    what="a quarter sent",
                )
                server.stop()
                stopped_at = time.monotonic()
                codes: list[int] = []
                # While it is down: 503 (never 500) on what needs the database, /health alive.
                while time.monotonic() - stopped_at < OUTAGE:
                    posted = client.post(
                        "/v1/messages",
                        json={
                            "messages": [
                                {
                                    "topic_id": "during",
                                    "emails": ["x@example.com"],
                                    "subject": "s",
                                    "content": "<p>x</p>",
                                }
                            ]
                        },
                    )
                    codes.append(posted.status_code)
                    codes.append(client.get("/v1/topics/t").status_code)
                    assert httpx.get(f"{service.url}/health").status_code == 200
                    time.sleep(1)  # pacing the probes of an outage of fixed length
                ready = httpx.get(f"{service.url}/ready", timeout=15)
                assert ready.status_code == 503
                server.start()
                assert set(codes) == {503}, codes
                assert service.process is not None
                assert service.process.poll() is None  # still running: waits, reconnects

                wait_for(
                    lambda: httpx.get(f"{service.url}/ready", timeout=15).status_code == 200,
                    timeout=30,
                    what="ready again",
                )
                wait_for(
                    lambda: topic_counts(client, "t").get("Sent", 0) == TOTAL,
                    timeout=60,
                    interval=0.5,
                    what="every email sent",
                )
                after = submit(client, topic="after", emails=["a@example.com"])
                wait_for(
                    lambda: topic_counts(client, "after").get("Sent") == 1,
                    timeout=20,
                    what="sent after",
                )
        finally:
            service.kill()
        delivered = fake.count_by_request()
    assert all(delivered[request_id] >= 1 for request_id in ids), "an accepted email was lost"
    assert delivered[after[0]] == 1
    duplicates = sum(count - 1 for count in delivered.values() if count > 1)
    print(f"duplicates after the outage: {duplicates}")
    assert duplicates <= 2 * 300  # at most what was in flight (the in-flight limit: 2 x rate)
