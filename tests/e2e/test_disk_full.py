"""A disk that fills up mid-run, end to end: every write is refused for a while, then works again.

The fault is a real one, not an injected store error: the test lowers the running service's
``RLIMIT_FSIZE`` to 0 with ``prlimit(2)`` (a process may lower and raise the soft limit of its own
child; no root needed). From then on every write that would grow a file fails with ``EFBIG``
exactly where a full disk fails with ``ENOSPC``: SQLite's WAL appends ("disk I/O error"), the
outbox's ``.eml`` files, the outbox probe. Python ignores ``SIGXFSZ``, so the process lives on;
reads still work (the WAL index is mapped memory), as they do on a full disk.

What must hold (docs/architecture.md: nothing accepted is lost; bad conditions show in ``/ready``
and the logs): writes answer 503 and change nothing, reads answer, ``/ready`` says why, sending
pauses without failing anything, the service stays up, and once the limit is lifted everything
accepted before and after is sent exactly once, with one error log line for the whole episode.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import (
    ServiceProcess,
    outbox_recipients,
    submit,
    topic_counts,
    wait_for,
    wait_topic,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit(2) is Linux-only"),
]

BEFORE = 1000
AFTER = 100
#: The submission made during the fault (refused) and again after it (accepted, same key).
DURING = {
    "messages": [
        {
            "topic_id": "during",
            "emails": ["during@example.org"],
            "subject": "s",
            "content": "<p>c</p>",
        }
    ]
}


@contextmanager
def disk_full(pid: int) -> Iterator[None]:
    """Files of process ``pid`` cannot grow by one byte until the block ends."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def ready(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def test_a_full_disk_pauses_everything_loses_nothing_and_recovers(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(
        SENDER_BACKEND="outbox",
        MAX_SEND_PER_SECOND="200",
        PAUSE_PROBE_SECONDS="0.25",
        METRICS_ENABLED="true",
    )
    assert service.process is not None
    pid = service.process.pid
    before = [f"before{n}@example.org" for n in range(BEFORE)]
    after = [f"after{n}@example.org" for n in range(AFTER)]
    outbox = service.workdir / "outbox"

    with service.client() as client:
        submit(client, topic="before", emails=before)
        wait_topic(client, "before", count=200, timeout=30)

        with disk_full(pid):
            # The next flush of outcomes is refused: /ready says so (reads still answer).
            def refusing() -> bool:
                status, body = ready(client)
                return status == 503 and "database refuses writes" in body.get("problems", [])

            wait_for(refusing, timeout=30, what="/ready to report refused writes")
            # The outbox cannot take a file either: sending pauses, nothing fails.
            wait_for(
                lambda: ready(client)[1]["sending"] == "paused",
                timeout=30,
                what="sending to pause",
            )
            status, body = ready(client)
            assert status == 503
            assert body["database"].startswith("refusing writes since"), body
            assert "disk I/O error" in body["database"] or "full" in body["database"], body
            # The original's two fields: not ready, yet the database answers (reads work).
            assert (body["status"], body["db"]) == ("unavailable", "connected"), body

            # Writes answer 503 with a JSON error and store nothing...
            refused = client.post(
                "/v1/messages",
                json=DURING,
                headers={"Idempotency-Key": "during-the-fault"},
            )
            assert refused.status_code == 503, refused.text
            assert "nothing was stored" in refused.json()["error"]
            assert refused.headers["Retry-After"] == "5"
            suppress = client.put("/v1/suppressions/blocked@example.org")
            assert suppress.status_code == 503, suppress.text
            # ...while reads answer.
            counts = topic_counts(client, "before")
            assert sum(counts.values()) == BEFORE
            assert counts["Failed"] == 0

            # Held until the pipeline has retried its writes a few times.
            wait_for(
                lambda: metric(client, "sesender_store_write_failures_total") >= 4,
                timeout=30,
                what="several refused writes",
            )
            assert metric(client, "sesender_store_writes_failing") == 1
            sent_during_fault = len(outbox_recipients(outbox))
            assert service.process.poll() is None  # up, not crashed

        wait_for(lambda: ready(client)[0] == 200, timeout=30, what="/ready to recover")
        assert metric(client, "sesender_store_writes_failing") == 0
        # The key of the refused request was not stored: the same request now goes through.
        retried = client.post(
            "/v1/messages",
            json=DURING,
            headers={"Idempotency-Key": "during-the-fault"},
        )
        assert retried.status_code == 200, retried.text
        assert retried.json()["success"] == 1
        submit(client, topic="after", emails=after)
        before_counts = wait_topic(client, "before", count=BEFORE, timeout=60)
        wait_topic(client, "after", count=AFTER, timeout=60)
        wait_topic(client, "during", count=1, timeout=60)

    assert before_counts["Failed"] == before_counts["Created"] == before_counts["Processed"] == 0
    # Every email accepted before and after the fault was written to the outbox exactly once.
    recipients = outbox_recipients(outbox)
    assert sent_during_fault < BEFORE
    assert set(recipients) == {*before, *after, "during@example.org"}
    assert set(recipients.values()) == {1}
    # One error line (one Sentry event) for the episode, one line when it ended.
    assert len(service.events("store_unavailable")) == 1
    assert len(service.events("store_recovered")) == 1
    assert service.events("sending_paused")
    assert service.stop() == 0
