"""Structured cancellation (DELETE /v1/topics/{topic_id}, see openapi.json) at the issue's scale.

3,000 emails of topic A and 3,000 of topic B are queued at ``MAX_SEND_PER_SECOND=50``; shortly
after sending starts, topic A is cancelled over HTTP. The service runs in this process under
``open_service`` (real time, a real socket, SQLite in ``tmp_path``) with an injected
``MemoryBackend``, whose records carry the trio-clock time at which each ``send`` started, so
"no send of A started after the DELETE" is checked exactly rather than inferred from files. The
HTTP calls go through ``httpx.AsyncClient`` on anyio's trio backend. It runs again with the SES
backend in bulk mode against ``bench.fake_ses`` (answering 20 ms late), wrapped to keep the same
records of every email SES accepted; the fake's own record must agree with them.

Asserted:

- no send of A started after the DELETE response arrived (only calls already in flight at that
  moment may complete);
- the DELETE's ``stopped`` equals A's final ``Stopped`` count, and A's ``Sent + Stopped == 3000``
  with nothing of A left ``Created`` or ``Processed``; A's ``Sent`` is exactly what the backend
  received;
- B is untouched: none of it ``Stopped``, all 3,000 sent, each exactly once;
- the cancelled emails consumed no send-rate tokens: B's remainder is sent in about
  ``remaining / 50`` seconds after the DELETE (had the ~2,900 cancelled A emails each taken a
  token, it would take about a minute more).

The issue's numbers are kept: at 50 per second B alone needs a minute, so the test takes about
62 s (under the 90 s the issue allows; the hard cap is 120 s for loaded machines); every wait is
a poll under a deadline. The two topics are
submitted in alternating requests of 500, so the queue interleaves them like concurrent clients
would, and the DELETE lands while A's first block is being sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import trio

from actors import ThreadLane
from sesender.backends.base import AccountStatus, Backend, OutgoingEmail, SendResult
from sesender.backends.memory import MemoryBackend, SentRecord
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.config import SesSendMode, load_config
from sesender.feedback.ses_events import TOPIC_TAG
from sesender.service import open_service
from tests.e2e.fake_ses_support import running_fake_ses
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


API_KEY = "cancellation-key"
RATE = 50
PER_TOPIC = 3_000
BLOCK = 500
#: Cancel once this many emails of A have been sent: "shortly after sending starts".
SENT_BEFORE_DELETE = 20
#: A hard cap on the whole test (it normally takes about 62 s: B alone needs PER_TOPIC / RATE).
TEST_DEADLINE = 120


class RecordingBackend(Backend, Protocol):
    @property
    def sent(self) -> list[SentRecord]:
        """Every email the provider accepted, with the trio-clock time its call started."""
        ...


class RecordingSesBackend:
    """The SES backend, keeping a :class:`SentRecord` of every email SES accepted, as
    ``MemoryBackend`` does."""

    name = "ses"

    def __init__(self, inner: SesBackend) -> None:
        self.inner = inner
        self._sent: list[SentRecord] = []

    @property
    def sent(self) -> list[SentRecord]:
        return self._sent

    async def send(self, email: OutgoingEmail) -> str:
        (result,) = await self.send_batch([email])
        if isinstance(result, Exception):
            raise result
        return result

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        started_at = trio.current_time()
        results = await self.inner.send_batch(emails)
        finished_at = trio.current_time()
        for email, result in zip(emails, results, strict=True):
            if isinstance(result, str):
                self._sent.append(SentRecord(result, email, started_at, finished_at))
        return results

    async def account_status(self) -> AccountStatus:
        return await self.inner.account_status()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(params=["memory", "ses-bulk"])
def backend(request: pytest.FixtureRequest) -> Iterator[RecordingBackend]:
    if request.param == "memory":
        # A little latency, so that some sends are in flight when the DELETE arrives.
        yield MemoryBackend(latency=0.02)
        return
    with running_fake_ses("--latency-ms", "20") as fake:
        client = build_ses_client(
            region="us-east-1",
            pool_size=8,
            connect_timeout=2.0,
            read_timeout=5.0,
            endpoint_url=fake.url,
            access_key_id="testing",
            secret_access_key="testing",
        )
        lane = ThreadLane("ses", 8)
        recording = RecordingSesBackend(
            SesBackend(client=client, lane=lane, send_mode=SesSendMode.BULK)
        )
        yield recording
        # What SES received is what the records say it accepted, no more.
        received = Counter(
            tag["Value"]
            for message in fake.messages()
            for tag in message["tags"]
            if tag["Name"] == TOPIC_TAG
        )
        assert received == Counter(record.email.topic_id for record in recording.sent)
        assert fake.get("/_bench/stats")["send_bulk_email"] > 0, "no bulk call was made"


async def test_cancelling_a_topic_stops_it_at_once_and_leaves_the_other_alone(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    config = load_config(
        {
            "SENDER_BACKEND": "memory",
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(tmp_path / "sesender.db"),
            "MAX_SEND_PER_SECOND": str(RATE),
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
    )

    def sent_of(topic: str) -> list[float]:
        return [r.started_at for r in backend.sent if r.email.topic_id == topic]

    with trio.fail_after(TEST_DEADLINE):
        async with open_service(config, backend=backend, handle_signals=False) as service:
            url = service.urls[0].replace("0.0.0.0", "127.0.0.1")
            async with httpx.AsyncClient(
                base_url=url, headers={"X-API-KEY": API_KEY}, timeout=30
            ) as client:

                async def counts(topic: str) -> dict[str, int]:
                    response = await client.get(f"/v1/topics/{topic}")
                    assert response.status_code == 200, response.text
                    request_counts: dict[str, int] = response.json()["request_counts"]
                    return request_counts

                for block in range(PER_TOPIC // BLOCK):
                    for topic in ("A", "B"):
                        emails = [
                            f"{topic.lower()}{block * BLOCK + n}@example.com" for n in range(BLOCK)
                        ]
                        response = await client.post(
                            "/v1/messages",
                            json={
                                "messages": [
                                    {
                                        "topic_id": topic,
                                        "emails": emails,
                                        "subject": f"Topic {topic}",
                                        "content": "<p>Hello</p>",
                                    }
                                ]
                            },
                        )
                        assert response.status_code == 200, response.text
                        assert response.json()["success"] == BLOCK

                async def sending_started() -> bool:
                    await trio.lowlevel.checkpoint()
                    return len(sent_of("A")) >= SENT_BEFORE_DELETE

                await wait_until(sending_started, timeout=10, interval=0.01)
                deleted = await client.delete("/v1/topics/A")
                delete_answered_at = trio.current_time()
                assert deleted.status_code == 200, deleted.text
                body = deleted.json()
                assert body["status"] == "ok"
                stopped = body["stopped"]
                b_sent_at_delete = len(sent_of("B"))

                # A settles: every email Sent or Stopped, none left queued or claimed.
                async def a_settled() -> dict[str, int] | None:
                    a = await counts("A")
                    return a if a.get("Created", 0) + a.get("Processed", 0) == 0 else None

                a_counts = await wait_until(a_settled, timeout=10, interval=0.1)

                a_starts = sent_of("A")
                late = [t - delete_answered_at for t in a_starts if t > delete_answered_at]
                assert not late, f"{len(late)} sends of A started after the DELETE: {late[:5]}"
                assert a_counts["Stopped"] == stopped
                assert a_counts["Sent"] + a_counts["Stopped"] == PER_TOPIC
                assert a_counts["Sent"] == len(a_starts)
                assert a_counts["Failed"] == 0
                assert SENT_BEFORE_DELETE <= len(a_starts) < BLOCK  # it really was early
                assert stopped > PER_TOPIC - BLOCK

                # B is untouched and completes at the configured rate, without A's tokens.
                async def b_done() -> dict[str, int] | None:
                    b = await counts("B")
                    return b if b.get("Sent", 0) == PER_TOPIC else None

                remaining = PER_TOPIC - b_sent_at_delete
                expected = remaining / RATE
                b_counts = await wait_until(b_done, timeout=expected * 1.25 + 10, interval=0.5)
                b_finished = max(sent_of("B")) - delete_answered_at
                assert b_finished <= expected * 1.15 + 5, (
                    f"B's last {remaining} emails took {b_finished:.1f}s after the DELETE,"
                    f" expected about {expected:.1f}s at {RATE}/s"
                )
                assert b_counts["Stopped"] == 0
                assert b_counts["Failed"] == 0
                assert sum(b_counts.values()) == PER_TOPIC
                b_requests = Counter(
                    r.email.request_id for r in backend.sent if r.email.topic_id == "B"
                )
                assert len(b_requests) == PER_TOPIC
                assert set(b_requests.values()) == {1}

                # A second DELETE finds nothing left to stop; A's numbers do not move.
                again = await client.delete("/v1/topics/A")
                assert again.json() == {"status": "ok", "stopped": 0}
                assert await counts("A") == a_counts
                assert len(sent_of("A")) == len(a_starts)
            service.shutdown.trigger("test finished")
