"""Provider faults, end to end: throttling and rejections, as a process.

``SENDER_BACKEND=memory`` with ``MEMORY_THROTTLE_RATE`` throttles that fraction of attempts
(``TooManyRequestsException``), and any recipient whose local part starts with ``reject`` is
refused with ``MessageRejected`` (a permanent error). Short retry delays keep the tests fast.

Throttling is also run with the SES backend in both ``SES_SEND_MODE``s against ``bench.fake_ses``,
which answers every 5th call ``429 TooManyRequestsException`` and, in a bulk call, every 7th
entry ``ACCOUNT_THROTTLED`` (only that email is retried). Rejections in both modes are in
test_ses_bulk_fake.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import ServiceProcess, message_details, submit, wait_topic

pytestmark = pytest.mark.e2e

RATE = 200
BURST = 20  # the default: max(1, rate / 10)
RETRIES = {"RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5"}
FAULTS = {
    "SENDER_BACKEND": "memory",
    "MEMORY_LATENCY_MS": "5",
    "MAX_SEND_PER_SECOND": str(RATE),
    **RETRIES,
}


@pytest.fixture(params=["memory", "ses-single", "ses-bulk"])
def throttling_provider(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Service settings for a provider that throttles about a fifth of the attempts."""
    if request.param == "memory":
        yield {**FAULTS, "MEMORY_THROTTLE_RATE": "0.2"}
        return
    options = ("--throttle-every", "5", "--entry-throttle-every", "7")
    with running_fake_ses(*options) as fake:
        mode = request.param.removeprefix("ses-")
        yield fake.service_env(SES_SEND_MODE=mode, MAX_SEND_PER_SECOND=str(RATE), **RETRIES)
        bulk_calls = fake.get("/_bench/stats")["send_bulk_email"]
        assert bulk_calls > 0 if mode == "bulk" else bulk_calls == 0, bulk_calls


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_throttling_is_retried_through_the_rate_limiter(
    start_service: Callable[..., ServiceProcess], throttling_provider: dict[str, str]
) -> None:
    # About 20% of attempts are throttled; 10 attempts make exhausting them all vanishingly
    # unlikely (0.2**10 per email), so every email must end Sent.
    service = start_service(**throttling_provider, MAX_ATTEMPTS="10")
    recipients = [f"throttled{n}@example.org" for n in range(400)]
    with service.client() as client:
        ids = submit(client, topic="throttled", emails=recipients)
        counts = wait_topic(client, "throttled", count=400, timeout=60)
        details = message_details(client, ids)
    assert counts["Failed"] == counts["Created"] == counts["Processed"] == 0
    assert all(d["status"] == "Sent" and d["message_id"] for d in details)
    attempts = sum(d["attempts"] for d in details)
    # Throttled attempts were retried and counted: about 1.25 attempts per email.
    assert attempts > len(details)
    retried = [d for d in details if d["attempts"] > 1]
    assert len(retried) >= 20  # expected about 80 of 400
    assert all(d["error"] is None for d in details)  # a later success clears the last error
    # Every attempt took a token: from the submission to the last send, no more attempts than
    # the bucket allows (its depth plus the rate over the window; 2 tokens of rounding slack).
    started = min(moment(d["created_at"]) for d in details)
    finished = max(moment(d["sent_at"]) for d in details)
    window = finished - started
    assert attempts <= BURST + RATE * window + 2, (attempts, window)


def test_rejected_recipients_fail_at_once_without_retry(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(**FAULTS, MEMORY_THROTTLE_RATE="0.2", MAX_ATTEMPTS="10")
    rejected = [f"reject{n}@example.org" for n in range(20)] + ["Rejected+x@example.org"]
    accepted = [f"fine{n}@example.org" for n in range(40)]
    with service.client() as client:
        ids = submit(client, topic="mixed", emails=[*rejected, *accepted])
        wait_topic(client, "mixed", status="Failed", count=len(rejected), timeout=30)
        counts = wait_topic(client, "mixed", count=len(accepted), timeout=30)
        details = message_details(client, ids)
    assert counts["Failed"] == len(rejected)
    assert counts["Created"] == counts["Processed"] == 0
    by_email = {d["email"].lower(): d for d in details}
    for email in rejected:
        detail = by_email[email.lower()]
        assert detail["status"] == "Failed", detail
        assert detail["attempts"] == 1, detail  # permanent: never retried
        assert detail["failure_kind"] == "permanent", detail
        assert "MessageRejected" in detail["error"], detail
        assert detail["message_id"] is None
        assert detail["sent_at"] is None
    for email in accepted:
        assert by_email[email]["status"] == "Sent"
