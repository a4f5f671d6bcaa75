"""A cancellation outlives the process: an email of a cancelled topic is never sent after a crash.

The emails the provider holds when ``DELETE /v1/topics/{id}`` answers are kept (their send is under
way); if that send then fails transiently, the retry must stop the email rather than put it back
in the queue, or the next process (which knows nothing of the cancel in memory) sends it.

The first process uses the memory backend throttling every attempt (``MEMORY_THROTTLE_RATE=1``)
with a second of latency, or the SES backend in bulk mode against ``bench.fake_ses`` answering
every call ``429`` a second late (bursts of 10, so the calls carry several entries), so a batch of
sends is always in flight and failing; the retry delay is long enough that the SIGKILL lands
before any retry falls due. The second process, on the same
database, writes every email it sends to the outbox: only the emails accepted after the cancel, and
the other topic's, may appear there, and every cancelled email ends ``Stopped``.

A cancel the database refuses (a full disk: 503) must leave no trace in the running process
either: the topic is then sent in full.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import (
    ServiceProcess,
    message_details,
    outbox_recipients,
    submit,
    topic_counts,
    wait_for,
    wait_topic,
)
from tests.e2e.test_disk_full import disk_full

pytestmark = pytest.mark.e2e

RETRIES = {
    "MAX_SEND_PER_SECOND": "10",
    "MAX_ATTEMPTS": "50",
    "RETRY_BASE_SECONDS": "8",  # the first retry falls due 4 to 8 s after the failure
    "RETRY_MAX_SECONDS": "8",
}
FAILING = {
    "SENDER_BACKEND": "memory",
    "MEMORY_THROTTLE_RATE": "1",
    "MEMORY_LATENCY_MS": "1000",
    **RETRIES,
}


@pytest.fixture(params=["memory", "ses-bulk"])
def failing_provider(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Service settings for a provider that throttles every attempt, a second late."""
    if request.param == "memory":
        yield FAILING
        return
    with running_fake_ses("--throttle-every", "1", "--latency-ms", "1000") as fake:
        yield fake.service_env(SES_SEND_MODE="bulk", SEND_BURST="10", **RETRIES)
        assert fake.get("/_bench/stats")["send_bulk_email"] > 0, "no bulk call was made"


def latest_due_ms(database: Path, topic: str) -> int:
    connection = sqlite3.connect(database)
    try:
        row = connection.execute(
            "SELECT MAX(due_at) FROM requests WHERE topic_id = ?", (topic,)
        ).fetchone()
    finally:
        connection.close()
    return int(row[0])


def test_a_cancelled_topic_failing_transiently_is_never_sent_after_a_crash(
    start_service: Callable[..., ServiceProcess], tmp_path: Path, failing_provider: dict[str, str]
) -> None:
    service = start_service(**failing_provider)
    doomed = [f"doomed{n}@example.org" for n in range(20)]
    later = [f"later{n}@example.org" for n in range(5)]
    others = [f"other{n}@example.org" for n in range(5)]
    with service.client() as client:
        cancelled_ids = submit(client, topic="doomed", emails=doomed)
        submit(client, topic="other", emails=others)
        # Sends of the topic are with the provider (and failing) when the DELETE arrives.
        wait_for(
            lambda: topic_counts(client, "doomed").get("Processed", 0) >= 5,
            timeout=15,
            what="sends of the topic in flight",
        )
        response = client.delete("/v1/topics/doomed")
        assert response.status_code == 200, response.text
        stopped = response.json()["stopped"]
        assert stopped < len(doomed), "no email was in flight at the DELETE: nothing was tested"
        submit(client, topic="doomed", emails=later)  # accepted after the cancel: must go out

        # The kept emails' sends fail (throttled): each one's outcome is written, and with the
        # cancellation recorded it is Stopped, not back in the queue.
        def settled() -> list[str] | None:
            statuses = [d["status"] for d in message_details(client, cancelled_ids)]
            return None if "Processed" in statuses else statuses

        statuses = wait_for(settled, timeout=15, what="outcomes of the kept sends")
    service.signal(signal.SIGKILL)
    assert service.wait(timeout=10) == -signal.SIGKILL
    assert statuses == ["Stopped"] * len(doomed)
    # A retry written before the kill falls due by this moment at the latest.
    due_by_ms = latest_due_ms(tmp_path / "sesender.db", "doomed")

    restarted = start_service(SENDER_BACKEND="outbox", MAX_SEND_PER_SECOND="100")
    with restarted.client() as client:
        wait_topic(client, "other", count=len(others), timeout=30)
        wait_topic(client, "doomed", count=len(later), timeout=30)
        wait_for(
            lambda: time.time() * 1000 > due_by_ms + 2000,
            timeout=15,
            what="every retry of the topic to fall due",
        )

        def settled_counts() -> dict[str, int] | None:
            counts = topic_counts(client, "doomed")
            return None if counts.get("Created", 0) + counts.get("Processed", 0) else counts

        counts = wait_for(settled_counts, timeout=15, what="the topic to settle")
        details = message_details(client, cancelled_ids)
    assert counts["Stopped"] == len(doomed)
    assert counts["Sent"] == len(later)
    assert {d["status"] for d in details} == {"Stopped"}
    assert outbox_recipients(tmp_path / "outbox") == Counter(later + others)
    assert restarted.stop() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit(2) is Linux-only")
def test_a_cancel_the_database_refuses_changes_nothing(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """DELETE while the disk is full answers 503, and the cancel it asked for did not happen in
    memory either: once the disk is back, every email of the topic is sent, none Stopped."""
    service = start_service(
        SENDER_BACKEND="outbox", MAX_SEND_PER_SECOND="50", PAUSE_PROBE_SECONDS="0.25"
    )
    assert service.process is not None
    recipients = [f"wanted{n}@example.org" for n in range(300)]
    with service.client() as client:
        submit(client, topic="wanted", emails=recipients)
        wait_topic(client, "wanted", count=20, timeout=30)
        with disk_full(service.process.pid):
            refused = client.delete("/v1/topics/wanted")
            assert refused.status_code == 503, refused.text
            assert "error" in refused.json()
        counts = wait_topic(client, "wanted", count=len(recipients), timeout=60)
    assert counts["Sent"] == len(recipients)
    assert counts["Stopped"] == 0
    assert outbox_recipients(tmp_path / "outbox") == Counter(recipients)
    assert service.stop() == 0
