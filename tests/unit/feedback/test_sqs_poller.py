"""SqsPoller against moto's SQS: verified envelopes and raw events are recorded, then deleted;
forged ones are deleted unrecorded; transient failures stay in the queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
import trio
from moto import mock_aws

from actors import ThreadLane, wait_until
from sesender.errors import StoreUnavailable
from sesender.feedback.intake import FeedbackIntake
from sesender.feedback.sns import SnsVerifier
from sesender.feedback.sqs_poller import SqsPoller, looks_like_sns_envelope
from sesender.feedback.testing import (
    DEFAULT_TEST_CERT_URL,
    MemoryCertificateFetcher,
    SnsMessageSigner,
)
from sesender.models import FeedbackItem, FeedbackReport

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@pytest.fixture
def sqs() -> Iterator[tuple[SQSClient, str]]:
    with mock_aws():
        client = boto3.client(
            "sqs",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        url = client.create_queue(QueueName="ses-events")["QueueUrl"]
        yield client, url


def ses_event(message_id: str) -> str:
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
                "processingTimeMillis": 5,
                "smtpResponse": "250 ok",
            },
        }
    )


async def run_until_settled(poller: SqsPoller, messages: int) -> None:
    """Run the poller until ``messages`` messages were each deleted or kept (with a deadline)."""

    def settled() -> bool:
        stats = poller.statistics()
        return stats.deleted + stats.kept >= messages

    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        await wait_until(settled, timeout=20)
        nursery.cancel_scope.cancel()


async def test_poller_records_then_deletes(
    sqs: tuple[SQSClient, str], signer: SnsMessageSigner, test_cert_pem: bytes, tmp_path: Path
) -> None:
    client, url = sqs
    written: list[FeedbackItem] = []
    fail_next = [False]

    async def write(item: FeedbackItem) -> FeedbackReport:
        if fail_next[0]:
            fail_next[0] = False
            raise StoreUnavailable("database unavailable: disk is full")
        written.append(item)
        return FeedbackReport(matched=1)

    async def confirm(url: str) -> None:
        raise AssertionError("a queue message must never confirm a subscription")

    # Two hours old: too old for the webhook, fine from our own queue.
    old = "2026-01-15T08:00:00.000Z"
    verifier = SnsVerifier(
        fetch_pem=MemoryCertificateFetcher().serve(DEFAULT_TEST_CERT_URL, test_cert_pem),
        now=lambda: datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
    )
    intake = FeedbackIntake(verifier=verifier, write=write, confirm_subscription=confirm)
    envelope = signer.notification(MessageId="sns-1", Message=ses_event("ses-1"), Timestamp=old)
    forged = json.loads(signer.notification(MessageId="sns-2", Message=ses_event("ses-2")))
    forged["Message"] = ses_event("ses-forged")
    client.send_message(QueueUrl=url, MessageBody=envelope.decode())
    client.send_message(QueueUrl=url, MessageBody=ses_event("ses-raw"))
    client.send_message(QueueUrl=url, MessageBody=json.dumps(forged))

    poller = SqsPoller(
        client=client,
        queue_url=url,
        intake=intake,
        lane=ThreadLane("sqs", 2),
        wait_seconds=0,
        visibility_timeout=0,
    )
    await run_until_settled(poller, 3)
    assert sorted(item.source_id or "" for item in written)[0] == "sns-1"
    assert any(item.source_id and item.source_id.startswith("sqs:") for item in written)
    assert {e.message_id for item in written for e in item.events} == {"ses-1", "ses-raw"}
    assert poller.statistics().deleted == 3  # the forged one is deleted, never recorded

    # A transient failure keeps the message for a later try.
    client.send_message(QueueUrl=url, MessageBody=ses_event("ses-later"))
    fail_next[0] = True
    await run_until_settled(poller, 5)  # 3 deleted before, 1 kept now, then 1 deleted on redelivery
    assert {e.message_id for item in written for e in item.events} == {
        "ses-1",
        "ses-raw",
        "ses-later",
    }
    assert poller.statistics().kept == 1
    assert poller.statistics().deleted == 4


def test_envelope_detection() -> None:
    assert looks_like_sns_envelope('{"Type": "Notification", "TopicArn": "arn"}')
    assert not looks_like_sns_envelope('{"eventType": "Bounce"}')
    assert not looks_like_sns_envelope("not json")
    assert not looks_like_sns_envelope("[1]")
