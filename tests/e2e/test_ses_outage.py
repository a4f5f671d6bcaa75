"""SES goes away for 30 seconds (connection refused) and comes back, end to end.

The service sends through boto3 to moto's SES server (``SES_SEND_MODE=single``) or to the fake SES
(``bulk``: moto has no ``SendBulkEmail``), but through :class:`OutageProxy`, which owns
the port the service connects to: going down closes the listener (the kernel refuses new
connections) and resets the open ones, mid-request for the sends in flight. The outage lasts the
30 seconds the hardening issue names: that duration is the scenario, not a wait for a result.

What must hold: sending pauses (``/ready`` says why) instead of spending attempts, no email ends
``Failed``, nothing is sent during the outage, and sending resumes within seconds of SES coming
back (quick probes of an unreachable endpoint, at most 5 s apart); every recipient gets the email,
with duplicates only for sends whose connection was reset after moto took them (at-least-once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from urllib.parse import urlsplit

import pytest

from tests.e2e.fake_ses_support import FakeSes, running_fake_ses
from tests.e2e.harness import (
    ServiceProcess,
    message_details,
    submit,
    topic_counts,
    wait_for,
    wait_topic,
)
from tests.e2e.outage_proxy import OutageProxy
from tests.e2e.sns_support import SENDER, MotoSes
from tests.e2e.sns_support import moto_ses as start_moto_ses

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 30.0
RATE = 20
EMAILS = 200


@pytest.fixture(params=["single", "bulk"])
def ses_endpoint(request: pytest.FixtureRequest) -> Iterator[MotoSes | FakeSes]:
    """``SES_SEND_MODE=single`` against moto; ``bulk`` against the fake SES (moto has no
    ``SendBulkEmail``). Both record what they accepted, per recipient."""
    if request.param == "single":
        with start_moto_ses(identity=SENDER.split("@")[1]) as server:
            yield server
    else:
        with running_fake_ses() as fake:
            yield fake


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_ses_unreachable_for_30_seconds_then_back(
    start_service: Callable[..., ServiceProcess], ses_endpoint: MotoSes | FakeSes
) -> None:
    upstream = urlsplit(ses_endpoint.url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    with OutageProxy((upstream.hostname, upstream.port)) as proxy:
        service = start_service(
            **ses_endpoint.service_env(
                AWS_ENDPOINT_URL_SESV2=proxy.url,
                MAX_SEND_PER_SECOND=str(RATE),
                RETRY_BASE_SECONDS="0.2",
                RETRY_MAX_SECONDS="1",
            )
        )
        recipients = [f"outage{n}@example.org" for n in range(EMAILS)]
        with service.client() as client:
            ids = submit(client, topic="outage", emails=recipients)
            wait_topic(client, "outage", count=60, timeout=30)

            proxy.go_down()
            down_at = time.time()

            def paused() -> bool:
                body = client.get("/ready").json()
                return bool(body["sending"] == "paused")

            wait_for(paused, timeout=15, what="sending to pause")
            reason = client.get("/ready").json()["sending_paused_reason"]
            assert "unreachable" in reason, reason

            def outage_over() -> bool:
                counts = topic_counts(client, "outage")
                assert counts["Failed"] == 0, counts  # checked every second of the outage
                return time.time() - down_at >= OUTAGE_SECONDS

            wait_for(outage_over, timeout=OUTAGE_SECONDS + 15, interval=1, what="the outage")

            proxy.come_back()
            back_at = time.time()
            counts = wait_topic(client, "outage", count=EMAILS, timeout=60 + EMAILS / RATE)
            details = message_details(client, ids)
        assert service.stop() == 0

    assert counts["Failed"] == counts["Created"] == counts["Processed"] == 0
    # Nothing was sent while SES was away (a send already answered may finish up to a second in).
    sent_at = sorted(moment(d["sent_at"]) for d in details)
    assert not [t for t in sent_at if down_at + 1 < t < back_at], (down_at, back_at)
    assert sum(t <= down_at + 1 for t in sent_at) >= 60
    resumed = service.events("sending_resumed")
    assert len(resumed) == 1
    assert back_at <= moment(resumed[0]["time"]) < back_at + 5 + 2  # probe ceiling + slack
    # Every recipient got it; a repeat only where a reset connection had already delivered.
    delivered = ses_endpoint.count_to()
    assert set(delivered) == set(recipients)
    duplicates = sum(count - 1 for count in delivered.values())
    assert duplicates <= 2 * RATE  # at most the sends in flight when the connections were reset
