"""SqsQueue translates every botocore failure into QueueError, and the poller lives on through
one: a refused receive is retried, a refused delete leaves the message to come back.

SQS is botocore's Stubber on a real client (no network) or a closed loopback port."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import boto3
import pytest
import trio
from botocore.config import Config
from botocore.stub import Stubber

from actors import ThreadLane, wait_until
from sesender.errors import QueueError, SesenderError
from sesender.feedback.intake import FeedbackIntake
from sesender.feedback.sns import SnsVerifier
from sesender.feedback.sqs_poller import SqsPoller
from sesender.feedback.sqs_queue import QueueMessage, SqsQueue
from sesender.feedback.testing import MemoryCertificateFetcher
from sesender.models import FeedbackItem, FeedbackReport

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ses-events"


def sqs_client(endpoint_url: str | None = None) -> SQSClient:
    return boto3.client(
        "sqs",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=endpoint_url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )


@pytest.fixture
def stubbed() -> Iterator[tuple[SQSClient, Stubber]]:
    client = sqs_client()
    with Stubber(client) as stubber:
        yield client, stubber


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def delivery_event(message_id: str) -> str:
    return json.dumps(
        {
            "eventType": "Delivery",
            "mail": {
                "timestamp": "2026-01-15T10:00:00.000Z",
                "messageId": message_id,
                "destination": ["a@example.com"],
            },
            "delivery": {
                "timestamp": "2026-01-15T10:00:01.000Z",
                "recipients": ["a@example.com"],
            },
        }
    )


def test_a_refused_receive_is_a_queue_error_naming_the_code(
    stubbed: tuple[SQSClient, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "receive_message",
        service_error_code="AccessDenied",
        service_message="no",
        http_status_code=403,
    )
    with pytest.raises(QueueError, match="SQS receive failed: AccessDenied: no") as caught:
        SqsQueue(client, QUEUE_URL).receive(wait_seconds=0, visibility_timeout=0)
    assert isinstance(caught.value, SesenderError)
    assert type(caught.value.__cause__).__name__ == "ClientError"


def test_an_unreachable_queue_is_a_queue_error() -> None:
    client = sqs_client(f"http://127.0.0.1:{closed_port()}")
    queue = SqsQueue(client, QUEUE_URL)
    with pytest.raises(QueueError, match="SQS receive failed"):
        queue.receive(wait_seconds=0, visibility_timeout=0)
    with pytest.raises(QueueError, match="SQS delete failed"):
        queue.delete([QueueMessage(message_id="m", receipt_handle="h", body="")])


def test_receive_and_delete_speak_sqs(stubbed: tuple[SQSClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "receive_message",
        {"Messages": [{"MessageId": "m-1", "ReceiptHandle": "h-1", "Body": "hello"}]},
        {
            "QueueUrl": QUEUE_URL,
            "MaxNumberOfMessages": 10,
            "WaitTimeSeconds": 3,
            "VisibilityTimeout": 30,
        },
    )
    stubber.add_response(
        "delete_message_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "ReceiptHandle": "h-1"}]},
    )
    queue = SqsQueue(client, QUEUE_URL)
    messages = queue.receive(wait_seconds=3, visibility_timeout=30)
    assert messages == [QueueMessage(message_id="m-1", receipt_handle="h-1", body="hello")]
    assert queue.delete(messages) == 1
    stubber.assert_no_pending_responses()


async def test_the_poller_lives_through_queue_errors(stubbed: tuple[SQSClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("receive_message", service_error_code="ServiceUnavailable")
    stubber.add_response(
        "receive_message",
        {"Messages": [{"MessageId": "m-1", "ReceiptHandle": "h-1", "Body": delivery_event("s")}]},
    )
    stubber.add_client_error("delete_message_batch", service_error_code="ServiceUnavailable")
    # Once the stub runs out, every receive answers "no messages".
    for _ in range(1000):
        stubber.add_response("receive_message", {})
    written: list[FeedbackItem] = []

    async def write(item: FeedbackItem) -> FeedbackReport:
        written.append(item)
        return FeedbackReport(matched=1)

    async def confirm(url: str) -> None:
        raise AssertionError("a queue message must never confirm a subscription")

    verifier = SnsVerifier(fetch_pem=MemoryCertificateFetcher(), now=lambda: datetime.now(UTC))
    intake = FeedbackIntake(verifier=verifier, write=write, confirm_subscription=confirm)
    poller = SqsPoller(
        client=client,
        queue_url=QUEUE_URL,
        intake=intake,
        lane=ThreadLane("sqs", 1),
        wait_seconds=0,
        visibility_timeout=0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        await wait_until(lambda: poller.statistics().errors >= 2, timeout=20)
        await wait_until(lambda: poller.statistics().receives >= 2, timeout=20)
        nursery.cancel_scope.cancel()
    stats = poller.statistics()
    assert stats.messages == 1
    assert stats.deleted == 0  # the delete failed: the message comes back, a duplicate then
    assert [event.message_id for item in written for event in item.events] == ["s"]
