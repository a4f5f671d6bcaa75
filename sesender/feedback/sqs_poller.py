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

SQS itself is reached through :class:`~sesender.feedback.sqs_queue.SqsQueue`, which translates
botocore's errors into :class:`~sesender.errors.QueueError`: a failed receive is retried after a
growing pause, a failed delete leaves the messages to come back as duplicates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from actors import ThreadLane
from sesender.errors import (
    QueueError,
    SnsCertificateUnavailable,
    SnsMalformed,
    SnsSignatureInvalid,
    StoreError,
    SubscriptionConfirmFailed,
)
from sesender.feedback.intake import FeedbackIntake
from sesender.feedback.sqs_queue import QueueMessage, SqsQueue

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
        self._queue = SqsQueue(client, queue_url)
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
            except QueueError as exc:
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
            done: list[QueueMessage] = []
            for message in messages:
                self._messages += 1
                if await self._handle(message):
                    done.append(message)
                else:
                    self._kept += 1
            if done:
                await self._delete(done)

    def _receive(self) -> list[QueueMessage]:
        return self._queue.receive(
            wait_seconds=self._wait_seconds, visibility_timeout=self._visibility_timeout
        )

    async def _handle(self, message: QueueMessage) -> bool:
        """Feed one message to the intake; True when it may be deleted."""
        body = message.body
        source_id = f"sqs:{message.message_id}"
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

    async def _delete(self, messages: list[QueueMessage]) -> None:
        try:
            self._deleted += await self._lane.run(self._queue.delete, messages)
        except QueueError as exc:
            # Committed but not deleted: they come back and are recognised as duplicates.
            self._errors += 1
            logger.warning("could not delete %d SQS messages: %s", len(messages), exc)

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
