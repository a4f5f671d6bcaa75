"""SES events from an SQS queue, end to end: the running service polls moto's SQS on 127.0.0.1.

A raw SES event (SES -> SQS, or SNS with raw message delivery) put on the queue is recorded
against the email it names and then deleted from the queue. A queue that cannot be reached is an
error the poller logs and waits out (sesender's ``QueueError``, translated from botocore at the
SQS wrapper): the service stays up and ready and still stops cleanly.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.e2e.harness import ServiceProcess, message_details, submit, wait_for, wait_topic

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.e2e

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@dataclass(frozen=True, slots=True)
class MotoSqs:
    endpoint_url: str
    client: SQSClient
    queue_url: str

    def waiting(self) -> int:
        """Messages still in the queue, visible or in flight."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def moto_sqs() -> Iterator[MotoSqs]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        client = boto3.client(
            "sqs",
            endpoint_url=endpoint_url,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        queue_url = client.create_queue(QueueName="ses-events")["QueueUrl"]
        yield MotoSqs(endpoint_url=endpoint_url, client=client, queue_url=queue_url)
    finally:
        server.stop()


def delivery_event(message_id: str, recipient: str) -> str:
    return json.dumps(
        {
            "eventType": "Delivery",
            "mail": {
                "timestamp": "2026-01-15T10:00:00.000Z",
                "messageId": message_id,
                "destination": [recipient],
            },
            "delivery": {
                "timestamp": "2026-01-15T10:00:01.000Z",
                "recipients": [recipient],
                "processingTimeMillis": 5,
                "smtpResponse": "250 ok",
            },
        }
    )


def event_types(service: ServiceProcess, request_id: int) -> set[str]:
    with service.client() as client:
        response = client.get(f"/v1/messages/{request_id}")
    assert response.status_code == 200, response.text
    return {event["type"] for event in response.json()["events"]}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_event_from_the_queue_is_recorded_then_deleted(
    moto_sqs: MotoSqs, start_service: Callable[..., ServiceProcess]
) -> None:
    service = start_service(
        SES_EVENTS_QUEUE_URL=moto_sqs.queue_url,
        AWS_ENDPOINT_URL_SQS=moto_sqs.endpoint_url,
        SQS_WAIT_SECONDS="1",
        MAX_SEND_PER_SECOND="100",
        **CREDENTIALS,
    )
    with service.client() as client:
        ids = submit(client, topic="sqs-events", emails=["reader@example.org"])
        wait_topic(client, "sqs-events", count=1, timeout=30)
        [detail] = message_details(client, ids)
    assert detail["message_id"]
    assert event_types(service, detail["request_id"]) == set()

    moto_sqs.client.send_message(
        QueueUrl=moto_sqs.queue_url,
        MessageBody=delivery_event(detail["message_id"], "reader@example.org"),
    )
    wait_for(
        lambda: "Delivery" in event_types(service, detail["request_id"]),
        timeout=30,
        what="the Delivery event from the queue",
    )
    wait_for(lambda: moto_sqs.waiting() == 0, timeout=30, what="the message deleted")
    assert service.events("sqs_receive_failed") == []
    assert service.stop() == 0


def test_an_unreachable_queue_is_waited_out(start_service: Callable[..., ServiceProcess]) -> None:
    unreachable = f"http://127.0.0.1:{closed_port()}"
    service = start_service(
        SES_EVENTS_QUEUE_URL=f"{unreachable}/123456789012/ses-events",
        AWS_ENDPOINT_URL_SQS=unreachable,
        SQS_WAIT_SECONDS="1",
        **CREDENTIALS,
    )
    failure: dict[str, Any] = wait_for(
        lambda: service.find("sqs_receive_failed"), timeout=30, what="a failed receive logged"
    )
    assert "SQS receive failed" in failure["message"], failure
    with service.client() as client:
        ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["actors"]["sqs-poller"] == "running"
    assert service.stop() == 0
