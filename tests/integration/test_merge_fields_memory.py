"""Merge fields through the memory backend, in process: the same email as outbox and SES send.

The memory backend keeps what it sent in the service's own memory, which nothing outside the
process can read, so tests/e2e/test_merge_fields.py (outbox, SES single, SES bulk, as processes)
cannot include it. This runs the whole service under ``open_service`` on a real socket with an
injected ``MemoryBackend``, posts the very same templated submission over HTTP, and checks each
recorded email against the same expected subject and HTML the end-to-end test holds the other
three backends to (a fresh database gives the same request ids, so the same tokens).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from sesender.backends.memory import MemoryBackend
from sesender.backends.text import text_part
from sesender.config import load_config
from sesender.service import open_service
from tests.e2e.sns_support import SENDER
from tests.e2e.test_merge_fields import (
    EXPECTED_VALUES,
    PUBLIC_URL,
    TRACKING_SECRET,
    body,
    expected_html,
)
from tests.waiting import wait_until

API_KEY = "integration-key"


async def test_the_memory_backend_sends_what_the_other_backends_send(tmp_path: Path) -> None:
    config = load_config(
        {
            "SENDER_BACKEND": "memory",
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(tmp_path / "sesender.db"),
            "SERVER_URL": PUBLIC_URL,
            "AWS_SES_FROM_EMAIL": SENDER,
            "TRACKING_SECRET": TRACKING_SECRET,
            "UNSUBSCRIBE_ENABLED": "true",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
    )
    backend = MemoryBackend()
    accepted = len(EXPECTED_VALUES)
    with trio.fail_after(30):
        async with open_service(config, backend=backend, handle_signals=False) as service:
            url = service.urls[0].replace("0.0.0.0", "127.0.0.1")
            async with httpx.AsyncClient(
                base_url=url, headers={"X-API-KEY": API_KEY}, timeout=10
            ) as client:
                response = await client.post("/v1/messages", json=body())
                assert response.status_code == 200, response.text
                answer = response.json()
                assert (answer["success"], answer["errors"]) == (accepted, 2)
                assert answer["first_request_id"] == 1

                async def all_sent() -> bool:
                    counts = (await client.get("/v1/topics/merge")).json()["request_counts"]
                    return bool(counts["Sent"] == accepted)

                await wait_until(all_sent, timeout=20)
            service.shutdown.trigger("test finished")

    ids = {address: n for n, address in enumerate(EXPECTED_VALUES, start=1)}
    sent = {record.email.recipient: record.email for record in backend.sent}
    assert len(backend.sent) == accepted
    assert set(sent) == set(EXPECTED_VALUES)
    for address, values in EXPECTED_VALUES.items():
        outgoing = sent[address]
        assert outgoing.subject == f"Hello {values['first_name']} ({values['plan']})"
        assert outgoing.html == expected_html(address, ids[address])
        text = text_part(outgoing)
        assert f"Dear {' '.join(values['first_name'].split())}," in text
        assert f"Sent to {address}." in text
