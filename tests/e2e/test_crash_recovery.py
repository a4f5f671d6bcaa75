"""Crash safety and graceful shutdown of the real process, with the outbox backend and with the
SES backend in bulk mode (``bench.fake_ses`` answering each call 50 ms late, so a crash hits calls
in flight; what it accepted, it keeps, keyed by the request id tag).

An accepted email is never lost (docs/architecture.md). After SIGKILL, emails left ``Processed`` are
sent again at the next start (at least once), the duplicates are bounded by what was in flight or
not yet flushed at the crash, and their number is logged at start. After SIGTERM the drain is
graceful: sends in flight finish, outcomes are flushed, everything else goes back to ``Created``, so
the next start recovers nothing and sends nothing twice.

Each restart runs on the same ``DATABASE_PATH`` and ``OUTBOX_DIR`` (or the same fake SES), at a
higher rate so the rest of the queue goes quickly (the rate is not what these tests are about).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.e2e.fake_ses_support import FakeSes, running_fake_ses
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


class Sink(Protocol):
    """Where the service's emails end up, and what it can tell about them afterwards."""

    def env(self, **overrides: str) -> dict[str, str]:
        """The service settings that send here."""
        ...

    def count(self) -> int:
        """How many emails were delivered so far (repeats included)."""
        ...

    def per_request(self) -> Counter[int]:
        """How many times each request id was delivered."""
        ...

    def per_recipient(self) -> Counter[str]:
        """How many times each address was delivered to."""
        ...


@dataclass
class OutboxSink:
    directory: Path

    def env(self, **overrides: str) -> dict[str, str]:
        return {"SENDER_BACKEND": "outbox", **overrides}

    def count(self) -> int:
        return count_outbox(self.directory)

    def per_request(self) -> Counter[int]:
        return files_by_request(self.directory)

    def per_recipient(self) -> Counter[str]:
        return outbox_recipients(self.directory)


@dataclass
class SesBulkSink:
    fake: FakeSes

    def env(self, **overrides: str) -> dict[str, str]:
        return self.fake.service_env(**overrides)

    def count(self) -> int:
        return len(self.fake.messages())

    def per_request(self) -> Counter[int]:
        return self.fake.count_by_request()

    def per_recipient(self) -> Counter[str]:
        return self.fake.count_to()


@pytest.fixture(params=["outbox", "ses-bulk"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    if request.param == "outbox":
        yield OutboxSink(tmp_path / "outbox")
    else:
        with running_fake_ses("--latency-ms", "50") as fake:
            yield SesBulkSink(fake)
            assert fake.get("/_bench/stats")["send_bulk_email"] > 0, "no bulk call was made"


def test_sigkill_mid_send_loses_nothing_and_bounds_duplicates(
    start_service: Callable[..., ServiceProcess], tmp_path: Path, sink: Sink
) -> None:
    rate, flush_size, flush_seconds = 200, 100, 0.5
    service = start_service(
        **sink.env(
            MAX_SEND_PER_SECOND=str(rate),
            POST_FLUSH_SIZE=str(flush_size),
            POST_FLUSH_SECONDS=str(flush_seconds),
        )
    )
    recipients = [f"crash{n}@example.org" for n in range(2000)]
    with service.client() as client:
        ids = submit(client, topic="crash", emails=recipients)
    wait_for(lambda: sink.count() >= 300, timeout=30, what="300 emails delivered")
    service.signal(signal.SIGKILL)
    assert service.wait(timeout=10) == -signal.SIGKILL
    files_at_kill = sink.count()
    assert files_at_kill < 2000, "everything was sent before the kill: nothing was tested"
    left_processed = processed_ids(tmp_path / "sesender.db")

    restarted = start_service(**sink.env(MAX_SEND_PER_SECOND=RESTART_RATE))
    with restarted.client() as client:
        counts = wait_topic(client, "crash", count=2000, timeout=120)
    assert counts["Processed"] == counts["Created"] == counts["Failed"] == 0

    # Nothing lost: every recipient got at least one file.
    per_recipient = sink.per_recipient()
    assert set(per_recipient) == set(recipients)
    # Duplicates only among what the crash left claimed, and within the in-flight + unflushed
    # window: at most 2 x rate sends in flight, plus outcomes not yet flushed (a full batch and
    # what accumulates during one flush interval).
    per_request = sink.per_request()
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
    start_service: Callable[..., ServiceProcess], tmp_path: Path, sink: Sink
) -> None:
    shutdown_timeout = 5.0
    service = start_service(
        **sink.env(MAX_SEND_PER_SECOND="50", SHUTDOWN_TIMEOUT_SECONDS=str(shutdown_timeout))
    )
    recipients = [f"drain{n}@example.org" for n in range(1000)]
    with service.client() as client:
        ids = submit(client, topic="drain", emails=recipients)
        wait_for(lambda: sink.count() >= 50, timeout=30, what="50 emails delivered")
    signalled = time.monotonic()
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=shutdown_timeout + 5) == 0
    assert time.monotonic() - signalled <= shutdown_timeout + 2
    assert service.find("drained") is not None
    assert service.find("shutdown_deadline") is None
    files_at_stop = sink.count()
    assert files_at_stop < 1000, "everything was sent before SIGTERM: nothing was tested"
    # The drain left nothing claimed (what was in memory went back to Created) and flushed the
    # outcome of every send that happened.
    assert status_counts(tmp_path / "sesender.db") == {0: 1000 - files_at_stop, 2: files_at_stop}

    restarted = start_service(**sink.env(MAX_SEND_PER_SECOND=RESTART_RATE))
    assert restarted.events("recovered") == []  # logged only when it requeued something
    with restarted.client() as client:
        counts = wait_topic(client, "drain", count=1000, timeout=120)
    assert counts["Processed"] == counts["Created"] == counts["Failed"] == 0
    per_request = sink.per_request()
    assert set(per_request) == set(ids)
    assert max(per_request.values()) == 1, "a graceful drain must not cause duplicates"
    per_recipient = sink.per_recipient()
    assert per_recipient == Counter(recipients)
    assert restarted.stop() == 0
