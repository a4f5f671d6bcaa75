"""Three ``sesender serve`` processes on one PostgreSQL database, one SIGKILLed mid-run.

30,000 emails over six topics are posted to the three instances in turn; they send through the
SES backend (bulk mode) to ``bench.fake_ses``, which records each message's arrival time. A third
of the way in, one instance is SIGKILLed and not restarted; a little later one topic is cancelled
on another instance. What must hold:

- every accepted email of the other topics is sent (the dead instance's claims are requeued by a
  survivor after the lease); duplicates only from the dead instance's claims at the kill;
- the instances share one rate: over the run the sends stay within ``MAX_SEND_PER_SECOND``, and
  the busiest one-second window at the fake is within ``MAX_SEND_PER_SECOND + SEND_BURST`` plus
  what a stall of the processes moves into one window (why the exact bound holds at the grants
  but cannot at the fake's arrival times: see the assertion); the survivors still reach half
  the rate together;
- the cancelled topic gets no new send from any instance later than 1 s after the response.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from sesender.feedback.ses_events import REQUEST_ID_TAG
from tests import postgres_support
from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import ServiceProcess, base_env, submit, topic_counts, wait_for

pytestmark = pytest.mark.e2e

TOTAL = 30_000
TOPICS = 6
RATE = 600
BURST = 60
LEASE = 4.0
BATCH = 50  # SendBulkEmail carries at most 50 destinations


def max_in_any_second(times: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s)."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_support.temporary_database("sesender_e2e") as url:
        yield url


def test_three_instances_one_killed_share_the_queue_and_the_rate(
    tmp_path: Path, database: str
) -> None:
    with running_fake_ses() as fake:
        instances: list[ServiceProcess] = []
        try:
            for number in range(3):
                workdir = tmp_path / f"i{number}"
                workdir.mkdir()
                env = base_env(workdir) | fake.service_env(
                    DATABASE_URL=database,
                    INSTANCE_ID=f"i{number}",
                    INSTANCE_LEASE_SECONDS=str(LEASE),
                    INSTANCE_HEARTBEAT_SECONDS="0.5",
                    MAX_SEND_PER_SECOND=str(RATE),
                    SEND_BURST=str(BURST),
                    DATABASE_POOL_SIZE="4",
                )
                instances.append(ServiceProcess(workdir, env).start())
            clients = [instance.client() for instance in instances]
            topic_of: dict[int, str] = {}
            per_topic = TOTAL // TOPICS
            for index in range(TOPICS):
                topic = f"topic-{index}"
                ids = submit(
                    clients[index % 3],
                    topic=topic,
                    emails=(f"t{index}-{n}@example.com" for n in range(per_topic)),
                )
                topic_of.update(dict.fromkeys(ids, topic))

            # A third sent: SIGKILL instance 2, note what it had claimed.
            # (Polled by the fake's counters: fetching its 10,000 recorded messages every 0.1 s
            # would stall it, and its arrival times with it.)
            wait_for(
                lambda: fake.get("/_bench/stats")["bulk_entries"] >= TOTAL // 3,
                timeout=60,
                what="a third sent",
            )
            instances[2].signal(signal.SIGKILL)
            killed_at = time.time()
            instances[2].wait(10)
            with psycopg.connect(database) as connection:
                row = connection.execute(
                    "SELECT COUNT(*) FROM requests WHERE status = 1 AND claimed_by = 'i2'"
                ).fetchone()
            dead_claims = int(row[0]) if row else 0

            # Then cancel one topic on instance 0.
            cancelled = "topic-5"
            response = clients[0].delete(f"/v1/topics/{cancelled}")
            assert response.status_code == 200, response.text
            cancelled_at = time.time()

            def settled() -> bool:
                counts = [topic_counts(clients[0], f"topic-{i}") for i in range(TOPICS)]
                return all(c.get("Created", 0) + c.get("Processed", 0) == 0 for c in counts)

            wait_for(settled, timeout=120, interval=0.5, what="every email sent or stopped")
            requeued = sum(
                event["count"]
                for instance in instances[:2]
                for event in instance.events("requeued_dead_claims")
            )
            # Exactly the dead instance's claims: no live instance was taken for dead.
            assert requeued == dead_claims
            requeued_at = min(
                datetime.fromisoformat(event["time"]).timestamp()
                for instance in instances[:2]
                for event in instance.events("requeued_dead_claims")
            )
            # The lease and a heartbeat (0.5 s), plus slack for a loaded machine.
            assert requeued_at - killed_at < LEASE + 0.5 + 5
            for index in range(TOPICS - 1):
                assert topic_counts(clients[0], f"topic-{index}").get("Sent") == per_topic
            for client in clients:
                client.close()
        finally:
            for instance in instances:
                instance.kill()

        messages = fake.messages()
    by_request: Counter[int] = Counter()
    late: list[float] = []
    for message in messages:
        (request_id,) = (
            int(tag["Value"]) for tag in message["tags"] if tag["Name"] == REQUEST_ID_TAG
        )
        by_request[request_id] += 1
        if topic_of[request_id] == cancelled and message["at"] > cancelled_at + 1.0:
            late.append(message["at"] - cancelled_at)
    accepted = [rid for rid, topic in topic_of.items() if topic != cancelled]
    assert all(by_request[rid] >= 1 for rid in accepted), "an accepted email was never sent"
    duplicates = sum(count - 1 for count in by_request.values() if count > 1)
    print(f"duplicates: {duplicates} (instance i2 held {dead_claims} claims when killed)")
    assert duplicates <= dead_claims
    assert late == [], f"{len(late)} sends of the cancelled topic more than 1 s after the DELETE"
    busiest = max_in_any_second([message["at"] for message in messages])
    print(f"busiest second at the fake SES: {busiest} sends (rate {RATE}, burst {BURST})")
    # The exact bound, R + burst in every one-second window, holds where the tokens are taken:
    # the bucket row grants no more (tests/unit/store/test_postgres_store.py checks it at the
    # grants), and at these rates every batch takes its own tokens as it goes to a sender. It
    # cannot hold exactly at the fake's arrival times, whatever the instances do: the fake stamps
    # a call when its (single) event loop gets to it, so a stall of s seconds anywhere between
    # the grant and that moment (an instance descheduled after its grant, the fake descheduled
    # while calls queue on its socket) moves up to R x s of properly spaced sends into the
    # window after it. What holds at the fake is R + burst + R x s, s the longest such stall in
    # the window: s is about 0 on a quiet machine (the shared-rate benchmark counted exactly
    # R + burst, 2,200 at R = 2,000), and up to about 0.25 s were seen on this shared 2-core
    # machine under a load of 18 (800 = R + burst + 140 at R = 600). The allowance below is
    # R x 0.33 s (200 sends, four bulk calls); it still fails by far if the rate were not
    # shared (three instances with a bucket each: up to 3 x R). Over the whole run the sends
    # stay within the rate (a second of slack for the jitter at both ends).
    assert busiest <= RATE + BURST + 4 * BATCH
    times = sorted(message["at"] for message in messages)
    assert len(times) <= BURST + RATE * (times[-1] - times[0] + 1)
    assert busiest >= RATE * 0.5  # the instances together still reach the rate


def test_a_client_of_any_instance_sees_the_same_topic(database: str, tmp_path: Path) -> None:
    """Statistics and request details are the database's, whichever instance answers."""
    instances = []
    try:
        for number in range(2):
            workdir = tmp_path / f"s{number}"
            workdir.mkdir()
            env = base_env(
                workdir,
                DATABASE_URL=database,
                INSTANCE_ID=["first", "second"][number],
                SENDER_BACKEND="memory",
                MAX_SEND_PER_SECOND="1000",
            )
            instances.append(ServiceProcess(workdir, env).start())
        with instances[0].client() as first, instances[1].client() as second:
            ids = submit(
                first, topic="any-instance", emails=[f"u{i}@example.com" for i in range(50)]
            )
            wait_for(
                lambda: topic_counts(second, "any-instance").get("Sent") == 50,
                timeout=20,
                what="50 sent",
            )
            detail = second.get(f"/v1/messages/{ids[0]}")
            assert detail.status_code == 200
            ready = httpx.get(f"{instances[1].url}/ready").json()
            assert ready["status"] == "ok"
            assert ready["instance"]["id"] == "second"
            assert ready["instance"]["heartbeat_age_seconds"] < 5
            metrics = httpx.get(f"{instances[1].url}/metrics").text
            assert 'sesender_instance_info{instance_id="second"} 1.0' in metrics
    finally:
        for instance in instances:
            instance.kill()


def test_an_account_pause_on_one_instance_pauses_the_others(database: str, tmp_path: Path) -> None:
    """Instance "ses" sends to a fake SES that pauses the account after 5 recipients; instance
    "quiet" uses the memory backend, which never pauses by itself: if it pauses, it learned it
    from the other instance (NOTIFY), and says so."""
    with running_fake_ses("--pause-after", "5") as fake:
        instances = []
        try:
            ses_dir, quiet_dir = tmp_path / "ses", tmp_path / "quiet"
            ses_dir.mkdir()
            quiet_dir.mkdir()
            instances.append(
                ServiceProcess(
                    ses_dir,
                    base_env(ses_dir)
                    | fake.service_env(
                        DATABASE_URL=database, INSTANCE_ID="ses", MAX_SEND_PER_SECOND="50"
                    ),
                ).start()
            )
            instances.append(
                ServiceProcess(
                    quiet_dir,
                    base_env(
                        quiet_dir,
                        DATABASE_URL=database,
                        INSTANCE_ID="quiet",
                        SENDER_BACKEND="memory",
                        PAUSE_PROBE_SECONDS="600",
                        # One account, one rate: the instances share MAX_SEND_PER_SECOND and
                        # SEND_BURST (docs/operations.md section 12).
                        MAX_SEND_PER_SECOND="50",
                    ),
                ).start()
            )
            with instances[0].client() as client:
                # Both instances claim from the one queue: enough emails that "ses" surely gets
                # more than the fake's 5 however fast "quiet" claims (the account rate is shared).
                submit(client, topic="p", emails=[f"p{i}@example.com" for i in range(2000)])

            def quiet_paused() -> dict[str, object] | None:
                body: dict[str, object] = httpx.get(f"{instances[1].url}/ready").json()
                return body if body["sending"] == "paused" else None

            body = wait_for(quiet_paused, timeout=30, what="the quiet instance paused")
            assert "paused by instance ses" in str(body["sending_paused_reason"])
            (event,) = instances[1].events("sending_paused")
            assert event["by"] == "ses"
        finally:
            for instance in instances:
                instance.kill()


def test_an_instance_with_other_rate_settings_refuses_to_start(
    database: str, tmp_path: Path
) -> None:
    """The instances share one token bucket, which each refill caps at the asking instance's
    SEND_BURST: with other settings beside a live instance, a second one does not start (exit
    code 2, the configuration error names both settings); with the same settings it does."""
    instances: list[ServiceProcess] = []
    try:
        for name in ("first", "other", "same"):
            (tmp_path / name).mkdir()
        instances.append(
            ServiceProcess(
                tmp_path / "first",
                base_env(
                    tmp_path / "first",
                    DATABASE_URL=database,
                    INSTANCE_ID="first",
                    MAX_SEND_PER_SECOND="200",
                    SEND_BURST="20",
                ),
            ).start()
        )
        other = ServiceProcess(
            tmp_path / "other",
            base_env(
                tmp_path / "other",
                DATABASE_URL=database,
                INSTANCE_ID="other",
                MAX_SEND_PER_SECOND="200",
                SEND_BURST="60",
            ),
        )
        instances.append(other)
        with pytest.raises(AssertionError, match="exited with 2"):
            other.start()
        message = "\n".join(other.raw_lines)
        assert "SEND_BURST=60 differ from those of the running instances" in message
        assert "first: MAX_SEND_PER_SECOND=200, SEND_BURST=20" in message
        with psycopg.connect(database) as connection:
            registered = [row[0] for row in connection.execute("SELECT instance_id FROM instances")]
        assert registered == ["first"]  # the refused one never counted as an instance

        instances.append(
            ServiceProcess(
                tmp_path / "same",
                base_env(
                    tmp_path / "same",
                    DATABASE_URL=database,
                    INSTANCE_ID="same",
                    MAX_SEND_PER_SECOND="200",
                    SEND_BURST="20",
                ),
            ).start()
        )
        assert httpx.get(f"{instances[-1].url}/ready").json()["status"] == "ok"
    finally:
        for instance in instances:
            instance.kill()
