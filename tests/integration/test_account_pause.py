"""An account-level pause, in process: the whole service on a real socket, the memory backend.

docs/architecture.md: an account-level error (sending paused, daily quota) pauses sending, keeps the
emails queued, shows on ``/ready`` and resumes later; it never fails the queue. The service runs
under ``open_service`` with an injected ``MemoryBackend`` whose script pauses the "account" on
the Nth send, and is driven over HTTP with ``httpx.AsyncClient`` (anyio's trio backend). Real
time, not the autojump clock: SQLite and hypercorn use threads and sockets. Every wait polls a
condition under a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from sesender.backends.base import OutgoingEmail
from sesender.backends.memory import MemoryBackend
from sesender.config import load_config
from sesender.errors import AccountSendError
from sesender.service import open_service
from tests.waiting import wait_until

API_KEY = "integration-key"
PAUSE_REASON = "Sending paused: account under review (test)"


async def test_account_pause_keeps_emails_queued_and_resumes(tmp_path: Path) -> None:
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
    backend = MemoryBackend(latency=0.002)
    calls = 0
    paused_request: list[int] = []

    def pause_on_the_30th(email: OutgoingEmail) -> None:
        nonlocal calls
        calls += 1
        if calls == 30:
            paused_request.append(email.request_id)
            backend.pause(PAUSE_REASON)
            raise AccountSendError(PAUSE_REASON, code="SendingPausedException")

    backend.script = pause_on_the_30th
    recipients = [f"paused{n}@example.org" for n in range(200)]

    with trio.fail_after(60):
        async with open_service(config, backend=backend, handle_signals=False) as service:
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

                async def paused() -> dict[str, Any] | None:
                    body = await ready()
                    return body if body["sending"] == "paused" else None

                # /ready reports the pause
                body = await wait_until(paused, timeout=10)
                assert body["status"] == "ready"
                assert PAUSE_REASON in body["sending_paused_reason"]
                assert "SendingPausedException" in body["sending_paused_reason"]
                attempts_at_pause = backend.statistics().attempts

                # Stay paused across at least two probes of the account, which still cannot
                # send: nothing fails, nothing more is sent, the rest stays queued.
                monitor = service.pipeline.account_monitor

                async def probed_twice() -> bool:
                    await trio.lowlevel.checkpoint()
                    return monitor.statistics().probes >= 2

                # the account monitor probed twice, still paused
                await wait_until(probed_twice, timeout=10)
                sent_while_paused = len(backend.sent)
                assert sent_while_paused < 200
                paused_counts = await counts()
                assert paused_counts["Failed"] == 0
                assert paused_counts["Sent"] <= sent_while_paused
                assert paused_counts["Created"] + paused_counts["Processed"] >= 200 - (
                    sent_while_paused
                )
                body = await ready()
                assert body["sending"] == "paused"
                assert PAUSE_REASON in body["sending_paused_reason"]
                assert len(backend.sent) == sent_while_paused
                # Nothing even reached the provider while the gate was closed.
                assert backend.statistics().attempts == attempts_at_pause

                backend.resume()

                async def all_sent() -> dict[str, int] | None:
                    current = await counts()
                    return current if current["Sent"] == 200 else None

                # everything is sent after the resume
                final = await wait_until(all_sent, timeout=20)
                assert final["Failed"] == final["Created"] == final["Processed"] == 0
                body = await ready()
                assert body["sending"] == "active"
                assert "sending_paused_reason" not in body

                # Every email was sent exactly once, the one that met the pause too.
                assert sorted(record.email.recipient for record in backend.sent) == sorted(
                    recipients
                )
                (request_id,) = paused_request
                detail = (await client.get(f"/v1/messages/{request_id}")).json()
                assert detail["status"] == "Sent"
                assert detail["error"] is None
            service.shutdown.trigger("test finished")
    assert backend.statistics().paused is False
