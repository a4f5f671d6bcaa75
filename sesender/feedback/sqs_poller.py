"""SqsPoller: takes SES events from an SQS queue (SNS -> SQS), so no public endpoint is needed.

It long-polls up to 10 messages at a time and feeds each through the same
:class:`~sesender.feedback.intake.FeedbackIntake` as the webhook: a body that carries the SNS
envelope is verified like a webhook call; a raw SES event (raw message delivery, or SES -> SQS
directly) is trusted because only principals allowed by the queue policy can put it there.

A message is deleted only after its feedback is committed, or when it can never succeed
(malformed, forged: logged, then deleted so it does not loop forever; a dead-letter queue on the
queue keeps a copy if the operator wants one). Transient failures (database unavailable,
certificate unavailable) leave the message in the queue: it becomes visible again after the
visibility timeout, so nothing is lost while sesender is down or degraded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from botocore.exceptions import BotoCoreError, ClientError

from actors import ThreadLane
from sesender.errors import (
    SnsCertificateUnavailable,
    SnsMalformed,
    SnsSignatureInvalid,
    StoreError,
)
from sesender.feedback.intake import FeedbackIntake, SubscriptionConfirmFailed

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: Pause after a failed receive before asking again (the queue or the network is down).
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class SqsPollerStatistics:
    receives: int
    messages: int
    deleted: int
    kept: int
    errors: int


class SqsPoller:
    def __init__(
        self,
        *,
        client: SQSClient,
        queue_url: str,
        intake: FeedbackIntake,
        lane: ThreadLane,
        wait_seconds: int = 20,
        visibility_timeout: int = 60,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._intake = intake
        self._lane = lane
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        self._receives = self._messages = self._deleted = self._kept = self._errors = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failures = 0
        while True:
            try:
                messages = await self._lane.run_abandonable(self._receive)
            except (BotoCoreError, ClientError) as exc:
                self._errors += 1
                delay = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
                failures += 1
                logger.error(
                    "could not receive from the SES events queue (%s); retrying in %.0fs",
                    exc,
                    delay,
                    extra={"event": "sqs_receive_failed"},
                )
                await trio.sleep(delay)
                continue
            failures = 0
            self._receives += 1
            if not messages:
                await trio.lowlevel.checkpoint()
                continue
            done: list[dict[str, str]] = []
            for message in messages:
                self._messages += 1
                if await self._handle(message):
                    done.append(
                        {"Id": message["MessageId"], "ReceiptHandle": message["ReceiptHandle"]}
                    )
                else:
                    self._kept += 1
            if done:
                await self._delete(done)

    def _receive(self) -> list[dict[str, Any]]:
        response = self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self._wait_seconds,
            VisibilityTimeout=self._visibility_timeout,
        )
        return [dict(message) for message in response.get("Messages", [])]

    async def _handle(self, message: dict[str, Any]) -> bool:
        """Feed one message to the intake; True when it may be deleted."""
        body: str = message.get("Body", "")
        source_id = f"sqs:{message.get('MessageId', '')}"
        try:
            if looks_like_sns_envelope(body):
                await self._intake.handle_sns(
                    body.encode("utf-8"), header_type=None, from_queue=True
                )
            else:
                await self._intake.handle_ses_message(body, source_id=source_id)
        except (SnsCertificateUnavailable, SubscriptionConfirmFailed, StoreError) as exc:
            logger.warning("keeping an SQS message for a later try: %s", exc)
            return False
        except (SnsMalformed, SnsSignatureInvalid) as exc:
            logger.error(
                "dropping an SQS message that can never be accepted: %s",
                exc,
                extra={"event": "sqs_message_refused"},
            )
            return True
        return True

    async def _delete(self, entries: list[dict[str, str]]) -> None:
        def delete() -> int:
            response = self._client.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=entries,  # type: ignore[arg-type]
            )
            return len(response.get("Successful", []))

        try:
            self._deleted += await self._lane.run(delete)
        except (BotoCoreError, ClientError) as exc:
            # Committed but not deleted: they come back and are recognised as duplicates.
            self._errors += 1
            logger.warning("could not delete %d SQS messages: %s", len(entries), exc)

    def statistics(self) -> SqsPollerStatistics:
        return SqsPollerStatistics(
            receives=self._receives,
            messages=self._messages,
            deleted=self._deleted,
            kept=self._kept,
            errors=self._errors,
        )


def looks_like_sns_envelope(body: str) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and "Type" in document and "TopicArn" in document


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
