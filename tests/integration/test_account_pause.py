"""An account-level pause, in process: the whole service on a real socket.

docs/architecture.md: an account-level error (sending paused, daily quota) pauses sending, keeps the
emails queued, shows on ``/ready`` and resumes later; it never fails the queue. The service runs
under ``open_service`` with an injected backend and is driven over HTTP with ``httpx.AsyncClient``
(anyio's trio backend). Real time, not the autojump clock: SQLite and hypercorn use threads and
sockets. Every wait polls a condition under a deadline.

The "account" pauses at the 30th send and stays paused until the test resumes it:

- ``memory``: a ``MemoryBackend`` whose script pauses it on the 30th send;
- ``ses-single`` / ``ses-bulk``: the SES backend in that ``SES_SEND_MODE`` against
  ``bench.fake_ses --pause-after 29`` (a process on loopback): the 30th recipient and every one
  after it is refused (``SendingPausedException``, or ``ACCOUNT_SENDING_PAUSED`` per bulk entry)
  and ``GetAccount`` says sending is disabled, until ``POST /_bench/resume``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import trio

from actors import ThreadLane
from sesender.backends.base import Backend, OutgoingEmail
from sesender.backends.memory import MemoryBackend
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.config import SesSendMode, load_config
from sesender.errors import AccountSendError
from sesender.service import open_service
from tests.e2e.fake_ses_support import FakeSes, running_fake_ses
from tests.waiting import wait_until

API_KEY = "integration-key"
PAUSE_REASON = "Sending paused: account under review (test)"
#: The send at which the account pauses.
PAUSE_AT = 30


class Account(Protocol):
    """A provider account that pauses at the ``PAUSE_AT``-th send, seen from the test."""

    @property
    def backend(self) -> Backend:
        """The backend to inject into the service."""
        ...

    @property
    def reason_parts(self) -> tuple[str, ...]:
        """What ``/ready`` must show of the provider's refusal."""
        ...

    def sent(self) -> list[str]:
        """The recipients the provider accepted, in order."""
        ...

    def attempts(self) -> int:
        """How many sends the backend began (answered or not, finished or still in flight)."""
        ...

    def met_the_pause(self) -> list[str]:
        """The recipients whose send the paused account refused."""
        ...

    def is_paused(self) -> bool: ...

    def resume(self) -> None: ...


@dataclass
class MemoryAccount:
    backend: MemoryBackend = field(default_factory=lambda: MemoryBackend(latency=0.002))
    reason_parts: tuple[str, ...] = (PAUSE_REASON, "SendingPausedException")
    refused: list[str] = field(default_factory=list)
    calls: int = 0

    def __post_init__(self) -> None:
        self.backend.script = self.pause_on_the_30th

    def pause_on_the_30th(self, email: OutgoingEmail) -> None:
        self.calls += 1
        if self.calls == PAUSE_AT:
            self.refused.append(email.recipient)
            self.backend.pause(PAUSE_REASON)
            raise AccountSendError(PAUSE_REASON, code="SendingPausedException")

    def sent(self) -> list[str]:
        return [record.email.recipient for record in self.backend.sent]

    def attempts(self) -> int:
        return self.backend.statistics().attempts

    def met_the_pause(self) -> list[str]:
        return self.refused

    def is_paused(self) -> bool:
        return self.backend.statistics().paused

    def resume(self) -> None:
        self.backend.resume()


@dataclass
class FakeSesAccount:
    fake: FakeSes
    backend: SesBackend
    reason_parts: tuple[str, ...]

    def sent(self) -> list[str]:
        return [message["to"] for message in self.fake.messages()]

    def attempts(self) -> int:
        # The SES backend counts a call once it returns: add those still under way.
        statistics = self.backend.statistics()
        return statistics.attempts + statistics.in_flight

    def met_the_pause(self) -> list[str]:
        refused: list[str] = self.fake.get("/_bench/account")["refused"]
        return refused

    def is_paused(self) -> bool:
        return bool(self.fake.get("/_bench/account")["paused"])

    def resume(self) -> None:
        self.fake.post("/_bench/resume")


@pytest.fixture(params=["memory", "ses-single", "ses-bulk"])
def account(request: pytest.FixtureRequest) -> Iterator[Account]:
    if request.param == "memory":
        yield MemoryAccount()
        return
    mode = SesSendMode(request.param.removeprefix("ses-"))
    with running_fake_ses("--pause-after", str(PAUSE_AT - 1)) as fake:
        client = build_ses_client(
            region="us-east-1",
            pool_size=8,
            connect_timeout=2.0,
            read_timeout=5.0,
            endpoint_url=fake.url,
            access_key_id="testing",
            secret_access_key="testing",
        )
        backend = SesBackend(client=client, lane=ThreadLane("ses", 8), send_mode=mode)
        code = "SendingPausedException" if mode is SesSendMode.SINGLE else "ACCOUNT_SENDING_PAUSED"
        try:
            yield FakeSesAccount(fake, backend, ("Sending paused for this account", code))
            bulk_calls = fake.get("/_bench/stats")["send_bulk_email"]
            assert bulk_calls > 0 if mode is SesSendMode.BULK else bulk_calls == 0, bulk_calls
        finally:
            client.close()


async def test_account_pause_keeps_emails_queued_and_resumes(
    tmp_path: Path, account: Account
) -> None:
    config = load_config(
        {
            "SENDER_BACKEND": "memory",
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(tmp_path / "sesender.db"),
            "MAX_SEND_PER_SECOND": "100",
            "PAUSE_PROBE_SECONDS": "0.2",
            "SCHEDULER_INTERVAL_SECONDS": "1",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
    )
    recipients = [f"paused{n}@example.org" for n in range(200)]

    with trio.fail_after(60):
        async with open_service(config, backend=account.backend, handle_signals=False) as service:
            url = service.urls[0].replace("0.0.0.0", "127.0.0.1")
            async with httpx.AsyncClient(
                base_url=url, headers={"X-API-KEY": API_KEY}, timeout=10
            ) as client:

                async def counts() -> dict[str, int]:
                    response = await client.get("/v1/topics/paused")
                    assert response.status_code == 200
                    request_counts: dict[str, int] = response.json()["request_counts"]
                    return request_counts

                async def ready() -> dict[str, Any]:
                    response = await client.get("/ready")
                    assert response.status_code == 200, response.text  # paused is still ready
                    body: dict[str, Any] = response.json()
                    return body

                response = await client.post(
                    "/v1/messages",
                    json={
                        "messages": [
                            {
                                "topic_id": "paused",
                                "emails": recipients,
                                "subject": "Paused",
                                "content": "<p>Hello</p>",
                            }
                        ]
                    },
                )
                assert response.status_code == 200, response.text
                assert response.json()["success"] == 200
                first_request_id = response.json()["first_request_id"]

                async def paused() -> dict[str, Any] | None:
                    body = await ready()
                    return body if body["sending"] == "paused" else None

                # /ready reports the pause
                body = await wait_until(paused, timeout=10)
                assert body["status"] == "ok"
                for part in account.reason_parts:
                    assert part in body["sending_paused_reason"]
                attempts_at_pause = account.attempts()

                # Stay paused across at least two probes of the account, which still cannot
                # send: nothing fails, nothing more is sent, the rest stays queued.
                monitor = service.pipeline.account_monitor

                async def probed_twice() -> bool:
                    await trio.lowlevel.checkpoint()
                    return monitor.statistics().probes >= 2

                # the account monitor probed twice, still paused
                await wait_until(probed_twice, timeout=10)
                sent_while_paused = len(account.sent())
                assert sent_while_paused < 200
                paused_counts = await counts()
                assert paused_counts["Failed"] == 0
                assert paused_counts["Sent"] <= sent_while_paused
                assert paused_counts["Created"] + paused_counts["Processed"] >= 200 - (
                    sent_while_paused
                )
                body = await ready()
                assert body["sending"] == "paused"
                assert account.reason_parts[0] in body["sending_paused_reason"]
                assert len(account.sent()) == sent_while_paused
                # Nothing even reached the provider while the gate was closed.
                assert account.attempts() == attempts_at_pause

                account.resume()

                async def all_sent() -> dict[str, int] | None:
                    current = await counts()
                    return current if current["Sent"] == 200 else None

                # everything is sent after the resume
                final = await wait_until(all_sent, timeout=20)
                assert final["Failed"] == final["Created"] == final["Processed"] == 0
                body = await ready()
                assert body["sending"] == "active"
                assert "sending_paused_reason" not in body

                # Every email was sent exactly once, those that met the pause too.
                assert sorted(account.sent()) == sorted(recipients)
                met_the_pause = account.met_the_pause()
                assert met_the_pause
                for address in met_the_pause:
                    request_id = first_request_id + recipients.index(address)
                    detail = (await client.get(f"/v1/messages/{request_id}")).json()
                    assert detail["status"] == "Sent"
                    assert detail["error"] is None
            service.shutdown.trigger("test finished")
    assert account.is_paused() is False
