"""SqsQueue: the SES events queue as sesender uses it, and the one place botocore's SQS errors
are translated.

Two blocking calls (receive up to ten messages with a long poll, delete a batch), each raising
:class:`~sesender.errors.QueueError` from botocore's exception, so the poller handles sesender's
own error and never imports botocore. Both calls are blocking: run them in a ``ThreadLane``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from sesender.errors import QueueError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

__all__ = ["QueueMessage", "SqsQueue", "build_sqs_client", "translate_error"]

#: The most messages SQS hands out per ReceiveMessage call.
MAX_MESSAGES_PER_RECEIVE = 10


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One received message: its SQS id, the handle that deletes it, and its body."""

    message_id: str
    receipt_handle: str
    body: str


def translate_error(exc: BotoCoreError | ClientError, action: str) -> QueueError:
    """Translate a botocore exception into a ``QueueError`` (the caller raises it ``from exc``).

    Every SQS failure is one kind for the poller: try again later. The message names the error
    code when SQS answered (``AccessDenied``, ``AWS.SimpleQueueService.NonExistentQueue``...).
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "unknown error"
        return QueueError(f"SQS {action} failed: {code}: {error.get('Message', '')}".rstrip(": "))
    return QueueError(f"SQS {action} failed: {exc}")


class SqsQueue:
    """One queue on one shared SQS client; blocking methods that raise only ``QueueError``."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def receive(self, *, wait_seconds: int, visibility_timeout: int) -> list[QueueMessage]:
        """Long-poll for up to ten messages; an empty list when none came within the wait."""
        try:
            response = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=MAX_MESSAGES_PER_RECEIVE,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=visibility_timeout,
            )
        except (BotoCoreError, ClientError) as exc:
            raise translate_error(exc, "receive") from exc
        return [
            QueueMessage(
                message_id=message.get("MessageId", ""),
                receipt_handle=message.get("ReceiptHandle", ""),
                body=message.get("Body", ""),
            )
            for message in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        """Delete ``messages`` (at most ten) in one call; return how many SQS deleted."""
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": message.receipt_handle}
            for index, message in enumerate(messages)
        ]
        try:
            response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            raise translate_error(exc, "delete") from exc
        return len(response.get("Successful", []))


def build_sqs_client(
    *,
    region: str,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    read_timeout: float,
) -> SQSClient:
    """One SQS client from an explicit session; the read timeout must outlast the long poll."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client(
        "sqs",
        endpoint_url=endpoint_url,
        config=BotoConfig(
            retries={"mode": "standard", "total_max_attempts": 3},
            read_timeout=read_timeout,
            max_pool_connections=2,
        ),
    )
