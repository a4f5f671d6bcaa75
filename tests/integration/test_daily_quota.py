"""A daily-quota pause with the SES backend, in process: the pause holds until the quota frees.

docs/architecture.md lists a daily quota among the account-level refusals: pause sending, keep
the emails queued, resume later. SES answers ``LimitExceededException: Daily message quota
exceeded.`` once the day's quota is used, and ``GetAccount`` (what the account monitor probes)
then reports ``SentLast24Hours >= Max24HourSend`` while ``SendingEnabled`` stays true. The SES
backend runs on a real sesv2 client whose two calls the service makes are answered by a fake
account through botocore's ``before-call`` event (the hook botocore's own ``Stubber`` uses): the
client is the real type with its real error handling, and nothing reaches the network. It runs
in both ``SES_SEND_MODE``s: with bulk calls, the entries past the quota answer
``ACCOUNT_DAILY_QUOTA_EXCEEDED``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from botocore.awsrequest import AWSResponse, HTTPHeaders

from actors import ThreadLane
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.config import SesSendMode, load_config
from sesender.errors import AccountSendError
from sesender.service import open_service
from tests.waiting import wait_until

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

API_KEY = "integration-key"


DAILY_QUOTA_EXCEEDED: dict[str, Any] = {
    "Error": {"Code": "LimitExceededException", "Message": "Daily message quota exceeded."},
    "ResponseMetadata": {"HTTPStatusCode": 400},
}

#: Never contacted: the account answers every call before a connection is made.
URL = "http://127.0.0.1:9"
#: What a before-call handler answers in place of SES: the HTTP response and the parsed body.
Answer = tuple[AWSResponse, dict[str, Any]]


def answer(status: int, body: dict[str, Any]) -> Answer:
    return AWSResponse(URL, status, HTTPHeaders(), None), body


class QuotaAccount:
    """An SES account that may send ``quota`` emails a day; ``new_day()`` resets it.

    :meth:`install` puts it behind a real sesv2 client: ``SendEmail`` and ``GetAccount`` are
    answered here, an error status makes botocore raise its own ``ClientError`` subclass.
    """

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.sent_today = 0
        self.send_calls = 0
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def new_day(self, quota: int) -> None:
        with self._lock:
            self.quota = quota
            self.sent_today = 0

    def install(self, client: SESV2Client) -> None:
        # botocore-stubs type every event handler as returning None, but a before-call handler
        # that returns (response, parsed) answers the call instead of SES: botocore.stub does so.
        events = client.meta.events
        events.register("before-call.sesv2.SendEmail", self._send_email)  # type: ignore[arg-type]
        events.register(
            "before-call.sesv2.SendBulkEmail",
            self._send_bulk_email,  # type: ignore[arg-type]
        )
        events.register("before-call.sesv2.GetAccount", self._get_account)  # type: ignore[arg-type]

    def _send_email(self, params: dict[str, Any], **_: object) -> Answer:
        """``params`` is the serialised request: SES v2 is REST-JSON, so the body is the JSON."""
        request = json.loads(params["body"])
        with self._lock:
            self.send_calls += 1
            if self.sent_today >= self.quota:
                return answer(400, DAILY_QUOTA_EXCEEDED)
            self.sent_today += 1
            (recipient,) = request["Destination"]["ToAddresses"]
            self.sent.append(recipient)
            return answer(200, {"MessageId": f"fake-{len(self.sent)}"})

    def _send_bulk_email(self, params: dict[str, Any], **_: object) -> Answer:
        """One result per entry: SUCCESS while the day's quota lasts, then SES's status for
        a used-up quota (the call itself succeeds)."""
        request = json.loads(params["body"])
        results: list[dict[str, str]] = []
        with self._lock:
            self.send_calls += 1
            for entry in request["BulkEmailEntries"]:
                if self.sent_today >= self.quota:
                    results.append(
                        {
                            "Status": "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                            "Error": "Daily message quota exceeded.",
                        }
                    )
                    continue
                self.sent_today += 1
                (recipient,) = entry["Destination"]["ToAddresses"]
                self.sent.append(recipient)
                results.append({"Status": "SUCCESS", "MessageId": f"fake-{len(self.sent)}"})
        return answer(200, {"BulkEmailEntryResults": results})

    def _get_account(self, **_: object) -> Answer:
        with self._lock:
            quota = {
                "Max24HourSend": float(self.quota),
                "MaxSendRate": 100.0,
                "SentLast24Hours": float(self.sent_today),
            }
        return answer(
            200,
            {
                "SendingEnabled": True,
                "EnforcementStatus": "HEALTHY",
                "ProductionAccessEnabled": True,
                "SendQuota": quota,
            },
        )


@pytest.mark.parametrize("send_mode", list(SesSendMode))
async def test_daily_quota_pause_holds_while_get_account_reports_the_quota_used(
    tmp_path: Path, send_mode: SesSendMode
) -> None:
    config = load_config(
        {
            "SENDER_BACKEND": "memory",  # the backend is injected; this only skips AWS checks
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(tmp_path / "sesender.db"),
            "MAX_SEND_PER_SECOND": "50",
            "PAUSE_PROBE_SECONDS": "0.1",
            "SCHEDULER_INTERVAL_SECONDS": "1",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
    )
    account = QuotaAccount(quota=5)
    client = build_ses_client(
        region="us-east-1",
        pool_size=8,
        connect_timeout=2.0,
        read_timeout=2.0,
        endpoint_url=URL,
        access_key_id="testing",
        secret_access_key="testing",
    )
    account.install(client)
    backend = SesBackend(client=client, lane=ThreadLane("ses", 8), send_mode=send_mode)
    recipients = [f"quota{n}@example.org" for n in range(20)]

    with trio.fail_after(30):
        async with open_service(config, backend=backend, handle_signals=False) as service:
            url = service.urls[0].replace("0.0.0.0", "127.0.0.1")
            async with httpx.AsyncClient(
                base_url=url, headers={"X-API-KEY": API_KEY}, timeout=10
            ) as http:
                response = await http.post(
                    "/v1/messages",
                    json={
                        "messages": [
                            {
                                "topic_id": "quota",
                                "emails": recipients,
                                "subject": "Quota",
                                "content": "<p>Hello</p>",
                            }
                        ]
                    },
                )
                assert response.json()["success"] == 20

                async def paused() -> dict[str, Any] | None:
                    body: dict[str, Any] = (await http.get("/ready")).json()
                    return body if body["sending"] == "paused" else None

                body = await wait_until(paused, timeout=10, interval=0.02)
                assert "Daily message quota exceeded" in body["sending_paused_reason"]

                # Three probes of the account, which still has no quota left: the pause must
                # hold, so no further SendEmail call is made (and nothing fails).
                monitor = service.pipeline.account_monitor

                async def probed(count: int) -> bool:
                    await trio.lowlevel.checkpoint()
                    return monitor.statistics().probes >= count

                await wait_until(lambda: probed(1), timeout=10, interval=0.02)
                calls_after_first_probe = account.send_calls
                await wait_until(lambda: probed(4), timeout=10, interval=0.02)
                gate = service.pipeline.gate_statistics()

                async def quota_recorded() -> dict[str, int] | None:
                    current: dict[str, int] = (await http.get("/v1/topics/quota")).json()[
                        "request_counts"
                    ]
                    return current if current["Sent"] >= 5 else None

                # the quota's worth was sent (flushed within 0.5 s)
                counts = await wait_until(quota_recorded, timeout=5, interval=0.02)
                assert counts["Failed"] == 0
                assert counts["Sent"] == 5
                assert gate.paused, "resumed although GetAccount reports the daily quota used up"
                assert gate.pauses_total == 1, (
                    f"the pause flapped {gate.pauses_total} times: every probe resumed sending"
                )
                assert account.send_calls == calls_after_first_probe, (
                    "SendEmail was called again while the daily quota was used up"
                )

                account.new_day(quota=1000)

                async def all_sent() -> bool:
                    current = (await http.get("/v1/topics/quota")).json()["request_counts"]
                    return bool(current["Sent"] == 20)

                await wait_until(all_sent, timeout=15, interval=0.02)
                assert sorted(account.sent) == sorted(recipients)
            service.shutdown.trigger("test finished")


async def test_bulk_entries_past_the_quota_are_account_errors_the_others_sent() -> None:
    """The fake account's bulk answer through the real client, parsed by botocore."""
    account = QuotaAccount(quota=5)
    client = build_ses_client(
        region="us-east-1",
        pool_size=2,
        connect_timeout=2.0,
        read_timeout=2.0,
        endpoint_url=URL,
        access_key_id="testing",
        secret_access_key="testing",
    )
    account.install(client)
    backend = SesBackend(client=client, lane=ThreadLane("ses", 2))
    emails = [
        OutgoingEmail(
            request_id=n,
            topic_id="quota",
            sender="news@example.com",
            recipient=f"quota{n}@example.org",
            subject="Quota",
            html="<p>Hello</p>",
            source_html="<p>Hello</p>",
        )
        for n in range(1, 9)
    ]
    results = await backend.send_batch(emails)
    assert account.send_calls == 1
    assert all(isinstance(result, str) for result in results[:5])
    for result in results[5:]:
        assert isinstance(result, AccountSendError)
        assert result.code == "ACCOUNT_DAILY_QUOTA_EXCEEDED"
    await backend.aclose()
