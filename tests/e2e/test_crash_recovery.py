"""Crash safety and graceful shutdown of the real process, with the outbox backend.

An accepted email is never lost (docs/architecture.md). After SIGKILL, emails left ``Processed`` are
sent again at the next start (at least once), the duplicates are bounded by what was in flight or
not yet flushed at the crash, and their number is logged at start. After SIGTERM the drain is
graceful: sends in flight finish, outcomes are flushed, everything else goes back to ``Created``, so
the next start recovers nothing and sends nothing twice.

Each restart runs on the same ``DATABASE_PATH`` and ``OUTBOX_DIR``, at a higher rate so the rest
of the queue goes quickly (the rate is not what these tests are about).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import (
    ServiceProcess,
    count_outbox,
    outbox_headers,
    outbox_recipients,
    submit,
    wait_for,
    wait_topic,
)

pytestmark = pytest.mark.e2e

RESTART_RATE = "1000"


def processed_ids(database: Path) -> set[int]:
    """Request ids left ``Processed`` (status 1) in the database of a stopped process."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute("SELECT id FROM requests WHERE status = 1").fetchall()
    finally:
        connection.close()
    return {int(row[0]) for row in rows}


def status_counts(database: Path) -> dict[int, int]:
    """How many requests have each status number, in the database of a stopped process."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute("SELECT status, COUNT(*) FROM requests GROUP BY status")
        return {int(status): int(count) for status, count in rows}
    finally:
        connection.close()


def files_by_request(outbox: Path) -> Counter[int]:
    return Counter(int(message["X-Sesender-Request-Id"]) for message in outbox_headers(outbox))


def test_sigkill_mid_send_loses_nothing_and_bounds_duplicates(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    rate, flush_size, flush_seconds = 200, 100, 0.5
    outbox = tmp_path / "outbox"
    service = start_service(
        SENDER_BACKEND="outbox",
        MAX_SEND_PER_SECOND=str(rate),
        POST_FLUSH_SIZE=str(flush_size),
        POST_FLUSH_SECONDS=str(flush_seconds),
    )
    recipients = [f"crash{n}@example.org" for n in range(2000)]
    with service.client() as client:
        ids = submit(client, topic="crash", emails=recipients)
    wait_for(lambda: count_outbox(outbox) >= 300, timeout=30, what="300 .eml files")
    service.signal(signal.SIGKILL)
    assert service.wait(timeout=10) == -signal.SIGKILL
    files_at_kill = count_outbox(outbox)
    assert files_at_kill < 2000, "everything was sent before the kill: nothing was tested"
    left_processed = processed_ids(tmp_path / "sesender.db")

    restarted = start_service(SENDER_BACKEND="outbox", MAX_SEND_PER_SECOND=RESTART_RATE)
    with restarted.client() as client:
        counts = wait_topic(client, "crash", count=2000, timeout=120)
    assert counts["Processed"] == counts["Created"] == counts["Failed"] == 0

    # Nothing lost: every recipient got at least one file.
    per_recipient = outbox_recipients(outbox)
    assert set(per_recipient) == set(recipients)
    # Duplicates only among what the crash left claimed, and within the in-flight + unflushed
    # window: at most 2 x rate sends in flight, plus outcomes not yet flushed (a full batch and
    # what accumulates during one flush interval).
    per_request = files_by_request(outbox)
    assert set(per_request) == set(ids)
    duplicated = {request_id for request_id, files in per_request.items() if files > 1}
    extra_files = sum(files - 1 for files in per_request.values())
    bound = 2 * rate + flush_size + int(flush_seconds * rate)
    assert duplicated <= left_processed
    assert extra_files == sum(files - 1 for files in per_recipient.values())
    assert extra_files <= bound
    assert max(per_request.values()) <= 2  # one crash, one resend at most

    # The restart requeued exactly what the crash left Processed, and said so.
    recovered = restarted.events("recovered")
    assert len(recovered) == 1, recovered
    assert recovered[0]["count"] == len(left_processed)
    assert recovered[0]["count"] >= len(duplicated)
    assert restarted.stop() == 0


def test_sigterm_mid_send_drains_without_duplicates(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    shutdown_timeout = 5.0
    outbox = tmp_path / "outbox"
    service = start_service(
        SENDER_BACKEND="outbox",
        MAX_SEND_PER_SECOND="50",
        SHUTDOWN_TIMEOUT_SECONDS=str(shutdown_timeout),
    )
    recipients = [f"drain{n}@example.org" for n in range(1000)]
    with service.client() as client:
        ids = submit(client, topic="drain", emails=recipients)
        wait_for(lambda: count_outbox(outbox) >= 50, timeout=30, what="50 .eml files")
    signalled = time.monotonic()
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=shutdown_timeout + 5) == 0
    assert time.monotonic() - signalled <= shutdown_timeout + 2
    assert service.find("drained") is not None
    assert service.find("shutdown_deadline") is None
    files_at_stop = count_outbox(outbox)
    assert files_at_stop < 1000, "everything was sent before SIGTERM: nothing was tested"
    # The drain left nothing claimed (what was in memory went back to Created) and flushed the
    # outcome of every send that happened.
    assert status_counts(tmp_path / "sesender.db") == {0: 1000 - files_at_stop, 2: files_at_stop}

    restarted = start_service(SENDER_BACKEND="outbox", MAX_SEND_PER_SECOND=RESTART_RATE)
    assert restarted.events("recovered") == []  # logged only when it requeued something
    with restarted.client() as client:
        counts = wait_topic(client, "drain", count=1000, timeout=120)
    assert counts["Processed"] == counts["Created"] == counts["Failed"] == 0
    per_request = files_by_request(outbox)
    assert set(per_request) == set(ids)
    assert max(per_request.values()) == 1, "a graceful drain must not cause duplicates"
    per_recipient = outbox_recipients(outbox)
    assert per_recipient == Counter(recipients)
    assert restarted.stop() == 0
