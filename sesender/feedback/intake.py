"""FeedbackIntake: from an SNS body (webhook or SQS) to committed feedback.

One path for both sources, so the webhook and the SQS poller cannot drift apart:

    parse the envelope -> verify it (signature, certificate, topic, freshness)
    -> SubscriptionConfirmation: confirm by GET on the verified SubscribeURL (same host rules)
    -> UnsubscribeConfirmation: log an alert; never follow it
    -> Notification: parse the SES event -> one result per affected recipient, suppressions for
       permanent bounces and complaints, transient bounces counted -> group commit, deduplicated
       by the SNS MessageId -> return only once committed.

The HTTP fetches (certificates, SubscribeURL) are injected: production uses httpx with redirects
off, a timeout and a size cap (:mod:`sesender.feedback.fetch`); tests use loopback servers.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sesender.addresses import check_address
from sesender.errors import SnsMalformed
from sesender.feedback.ses_events import SesEvent, parse_ses_event
from sesender.feedback.sns import SnsEnvelope, SnsVerifier, parse_envelope
from sesender.models import ClickEvent, FeedbackItem, FeedbackReport, ResultEvent, Suppression

logger = logging.getLogger(__name__)


class IntakeOutcome(enum.StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    UNKNOWN_MESSAGE = "unknown_message"
    IGNORED = "ignored"  # verified, but not an SES event we record
    SUBSCRIPTION_CONFIRMED = "subscription_confirmed"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: IntakeOutcome
    message_type: str
    event_type: str | None = None
    report: FeedbackReport | None = None


class FeedbackIntake:
    def __init__(
        self,
        *,
        verifier: SnsVerifier,
        write: Callable[[FeedbackItem], Awaitable[FeedbackReport]],
        confirm_subscription: Callable[[str], Awaitable[None]],
        on_recorded: Callable[[str], None] | None = None,
        own_click_prefix: str | None = None,
    ) -> None:
        self._on_recorded = on_recorded
        #: ``{SERVER_URL}/v1/events/click/``: an SES click on such a link was a click on a link
        #: sesender tracks, which its redirect records; counting the SES event too would count
        #: that click twice.
        self._own_click_prefix = own_click_prefix
        self._verifier = verifier
        self._write = write
        self._confirm = confirm_subscription

    async def handle_sns(
        self, body: bytes, *, header_type: str | None, from_queue: bool = False
    ) -> IntakeResult:
        """Handle one SNS message; raises SnsMalformed (400), SnsSignatureInvalid (403),
        SnsCertificateUnavailable / SubscriptionConfirmFailed / StoreError (5xx: retry)."""
        envelope = parse_envelope(body)
        if header_type is not None and header_type != envelope.type:
            raise SnsMalformed(
                f"x-amz-sns-message-type {header_type[:40]!r} does not match the body's Type"
            )
        await self._verifier.verify(envelope, check_freshness=not from_queue)
        match envelope.type:
            case "SubscriptionConfirmation" if from_queue:
                # SNS -> SQS subscriptions are confirmed by the queue policy, never by us.
                return IntakeResult(IntakeOutcome.IGNORED, envelope.type)
            case "SubscriptionConfirmation":
                return await self._confirm_subscription(envelope)
            case "UnsubscribeConfirmation":
                logger.error(
                    "SNS says this endpoint was unsubscribed from %s; SES events will stop"
                    " arriving until it is subscribed again",
                    envelope.topic_arn,
                    extra={"event": "sns_unsubscribed", "topic_arn": envelope.topic_arn},
                )
                return IntakeResult(IntakeOutcome.UNSUBSCRIBED, envelope.type)
        return await self.handle_ses_message(
            envelope.message, source_id=envelope.message_id, message_type=envelope.type
        )

    async def handle_ses_message(
        self, message: str, *, source_id: str | None, message_type: str = "Notification"
    ) -> IntakeResult:
        """Record one SES event (the ``Message`` of a verified notification, or a raw SQS body
        that IAM, not a signature, vouches for)."""
        try:
            event = parse_ses_event(message)
        except SnsMalformed as exc:
            logger.warning(
                "ignoring a notification that is not an SES event: %s",
                exc,
                extra={"event": "sns_ignored", "source_id": source_id},
            )
            return IntakeResult(IntakeOutcome.IGNORED, message_type)
        if (
            event.event_type == "Click"
            and self._own_click_prefix
            and (event.link or "").startswith(self._own_click_prefix)
        ):
            logger.debug(
                "SES click on a link sesender tracks itself: counted by its redirect, not twice",
                extra={"event": "ses_click_own_link", "ses_message_id": event.ses_message_id},
            )
            return IntakeResult(IntakeOutcome.IGNORED, message_type, event.event_type)
        report = await self._write(feedback_item(event, source_id=source_id))
        if report.duplicates:
            outcome = IntakeOutcome.DUPLICATE
        elif report.matched == 0:
            outcome = IntakeOutcome.UNKNOWN_MESSAGE
            logger.info(
                "SES %s event for unknown message %s",
                event.event_type,
                event.ses_message_id,
                extra={"event": "ses_event_unknown", "ses_message_id": event.ses_message_id},
            )
        else:
            outcome = IntakeOutcome.RECORDED
            if self._on_recorded is not None:
                self._on_recorded(event.event_type)
        return IntakeResult(outcome, message_type, event.event_type, report)

    async def _confirm_subscription(self, envelope: SnsEnvelope) -> IntakeResult:
        url = self._verifier.confirmation_url(envelope)
        await self._confirm(url)
        logger.warning(
            "confirmed the SNS subscription to %s",
            envelope.topic_arn,
            extra={"event": "sns_subscription_confirmed", "topic_arn": envelope.topic_arn},
        )
        return IntakeResult(IntakeOutcome.SUBSCRIPTION_CONFIRMED, envelope.type)


def feedback_item(event: SesEvent, *, source_id: str | None) -> FeedbackItem:
    """What one SES event means for the store."""
    occurred_at_ms = int(event.occurred_at.timestamp() * 1000)
    events: list[ResultEvent] = []
    suppressions: list[Suppression] = []
    transient: list[str] = []
    reason = {"Bounce": "bounce", "Complaint": "complaint", "Subscription": "unsubscribe"}
    for recipient in event.recipients or ():
        detail = {
            key: value
            for key, value in (
                ("recipient", recipient.email),
                ("bounce_type", recipient.bounce_type),
                ("sub_type", recipient.sub_type),
                ("status", recipient.status),
                ("diagnostic", recipient.diagnostic),
                ("feedback_type", recipient.feedback_type),
                ("link", event.link),
            )
            if value
        }
        events.append(
            ResultEvent(
                event_type=str(event.event_type),
                occurred_at_ms=occurred_at_ms,
                request_id=event.request_id_tag,
                message_id=event.ses_message_id,
                detail=json.dumps(detail, ensure_ascii=False) if detail else None,
            )
        )
        if not (recipient.suppresses or recipient.bounce_type == "Transient"):
            continue
        # Only a valid address, normalised as submissions are, is suppressed or counted: a
        # signed event can still carry anything in its recipient fields (found by
        # tests/e2e/test_signed_hostile_events.py: '" OR 1=1 --' was stored as suppressed).
        address = check_address(recipient.email.strip()).normalized
        if address is None:
            logger.warning(
                "SES %s event names a recipient that is not a valid address; not suppressed",
                event.event_type,
                extra={"event": "ses_event_invalid_recipient"},
            )
        elif recipient.suppresses:
            suppressions.append(
                Suppression(
                    reason=reason.get(str(event.event_type), str(event.event_type).lower()),
                    source=source_id or event.ses_message_id,
                    email=address,
                    detail=json.dumps(detail, ensure_ascii=False),
                )
            )
        elif event.event_type == "Bounce":
            transient.append(address)
    if event.event_type == "Click" and event.link is not None:
        # Recorded as a click on that link (once per email, per-link counters), like a click on
        # a link sesender rewrote; SES names the email (the message id), not the recipient.
        click = ClickEvent(
            occurred_at_ms=occurred_at_ms,
            request_id=event.request_id_tag,
            message_id=event.ses_message_id,
            url=event.link,
            user_agent=event.user_agent,
            source="ses",
        )
        return FeedbackItem(clicks=(click,), source_id=source_id)
    if not events:  # an event without recipients still counts once for its email
        events.append(
            ResultEvent(
                event_type=str(event.event_type),
                occurred_at_ms=occurred_at_ms,
                request_id=event.request_id_tag,
                message_id=event.ses_message_id,
                detail=json.dumps({"link": event.link}, ensure_ascii=False) if event.link else None,
            )
        )
    return FeedbackItem(
        events=tuple(events),
        suppressions=tuple(suppressions),
        transient_bounces=tuple(transient),
        source_id=source_id,
    )
