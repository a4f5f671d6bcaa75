"""Parse the SES event carried in a verified SNS Notification's ``Message``.

SES publishes in two formats (ref ses-sns.md §2.1): identity *notifications*, keyed by
``notificationType`` (Bounce, Complaint, Delivery), and configuration-set *event publishing*,
keyed by ``eventType`` (ten types, one spelt with a space). Both become one :class:`SesEvent` with
a normalised type name and one :class:`RecipientEvent` per affected recipient, so the rest of
sesender never looks at SES JSON.

Who is affected is read where SES says it (ref §2.3): ``bounce.bouncedRecipients``,
``complaint.complainedRecipients``, ``delivery.recipients`` and
``deliveryDelay.delayedRecipients``. ``mail.destination`` lists *every* recipient of the original
mail, so it is used only for the types that have no per-recipient list (Send, Reject, Open, Click,
Rendering Failure, Subscription). Unknown fields are ignored, since SES adds fields over time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final, Literal

from sesender.errors import SnsMalformed
from sesender.feedback.parsing import load_json_object, parse_timestamp

__all__ = [
    "REQUEST_ID_TAG",
    "TOPIC_TAG",
    "RecipientEvent",
    "SesEvent",
    "SesEventType",
    "parse_ses_event",
]

SesEventType = Literal[
    "Bounce",
    "Complaint",
    "Delivery",
    "Send",
    "Reject",
    "Open",
    "Click",
    "RenderingFailure",
    "DeliveryDelay",
    "Subscription",
]

REQUEST_ID_TAG: Final = "sesender_request_id"
"""The SES email tag in which sesender's sender puts the email's request id."""
TOPIC_TAG: Final = "sesender_topic"
"""The SES email tag in which sesender's sender puts the email's topic id."""

_MAX_REQUEST_ID: Final = 2**63 - 1
_REQUEST_ID_TEXT = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)

# SES's spelling -> (normalised type, the key of the type's detail object).
_NOTIFICATION_TYPES: Final[Mapping[str, tuple[SesEventType, str]]] = MappingProxyType(
    {
        "Bounce": ("Bounce", "bounce"),
        "Complaint": ("Complaint", "complaint"),
        "Delivery": ("Delivery", "delivery"),
    }
)
_EVENT_TYPES: Final[Mapping[str, tuple[SesEventType, str]]] = MappingProxyType(
    {
        "Send": ("Send", "send"),
        "Reject": ("Reject", "reject"),
        "Bounce": ("Bounce", "bounce"),
        "Complaint": ("Complaint", "complaint"),
        "Delivery": ("Delivery", "delivery"),
        "Open": ("Open", "open"),
        "Click": ("Click", "click"),
        "Rendering Failure": ("RenderingFailure", "failure"),
        "RenderingFailure": ("RenderingFailure", "failure"),
        "DeliveryDelay": ("DeliveryDelay", "deliveryDelay"),
        "Subscription": ("Subscription", "subscription"),
    }
)


@dataclass(frozen=True, slots=True)
class RecipientEvent:
    """What one SES event says about one recipient.

    ``suppresses`` is True when the address must not be mailed again (ref §2.3, spec §4): a
    Permanent bounce, a complaint (except a ``not-spam`` feedback report, which says the opposite),
    or a Subscription event that unsubscribes from everything. Transient and Undetermined bounces
    do not suppress. ``bounce_type`` / ``sub_type`` / ``status`` / ``diagnostic`` come from bounces
    (and DSN status and diagnostic from delivery delays); ``feedback_type`` from complaints.
    """

    email: str
    suppresses: bool = False
    bounce_type: str | None = None
    sub_type: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    feedback_type: str | None = None


@dataclass(frozen=True, slots=True)
class SesEvent:
    """One SES event, normalised.

    ``ses_message_id`` is ``mail.messageId``, the id ``SendEmail`` returned. ``occurred_at`` is the
    event's own timestamp (bounce, delivery, open...), or ``mail.timestamp`` for types without one.
    ``tags`` are the event-publishing ``mail.tags`` (empty for identity notifications, which do not
    publish tags); ``request_id_tag`` / ``topic_tag`` are sesender's own tags, which match an event
    to its email when the SES message id was not stored yet. ``feedback_id`` is SES's id of a bounce
    or complaint report, for de-duplication (ref §2.3).
    """

    event_type: SesEventType
    ses_message_id: str
    occurred_at: datetime
    recipients: tuple[RecipientEvent, ...]
    tags: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    request_id_tag: int | None = None
    topic_tag: str | None = None
    feedback_id: str | None = None
    #: the link clicked (``click.link`` of a Click event), for the ``email.clicked`` webhook.
    link: str | None = None


def _object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise SnsMalformed(f"SES event {what} is missing or not an object")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SnsMalformed(f"SES event {what} is missing or not a non-empty string")
    return value


def _optional_text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SnsMalformed(f"SES event {what} must be a string")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise SnsMalformed(f"SES event {what} is missing or not a list")
    return value


def _event_type(document: Mapping[str, object]) -> tuple[SesEventType, str]:
    notification_type = document.get("notificationType")
    event_type = document.get("eventType")
    if notification_type is not None and event_type is not None:
        raise SnsMalformed("SES event has both notificationType and eventType")
    if notification_type is not None:
        known = (
            _NOTIFICATION_TYPES.get(notification_type)
            if isinstance(notification_type, str)
            else None
        )
        if known is None:
            raise SnsMalformed(f"unknown SES notificationType {str(notification_type)[:64]!r}")
        return known
    if event_type is not None:
        known = _EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
        if known is None:
            raise SnsMalformed(f"unknown SES eventType {str(event_type)[:64]!r}")
        return known
    raise SnsMalformed("SES event has neither notificationType nor eventType")


def _tags(mail: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    raw = mail.get("tags")
    if raw is None:
        return {}
    tags: dict[str, tuple[str, ...]] = {}
    for name, values in _object(raw, "mail.tags").items():
        items = _list(values, f"mail.tags[{name[:64]!r}]")
        if not all(isinstance(item, str) for item in items):
            raise SnsMalformed(f"SES event mail.tags[{name[:64]!r}] must be a list of strings")
        tags[name] = tuple(str(item) for item in items)
    return tags


def _request_id(tags: Mapping[str, tuple[str, ...]]) -> int | None:
    """sesender's request id tag, or None if absent or not a positive 63-bit decimal integer.

    A bad tag does not make the whole event malformed: the event can still be matched by its SES
    message id, so it is worth storing.
    """
    values = tags.get(REQUEST_ID_TAG, ())
    if len(values) != 1 or _REQUEST_ID_TEXT.fullmatch(values[0]) is None:
        return None
    request_id = int(values[0])
    return request_id if request_id <= _MAX_REQUEST_ID else None


def _addresses(value: object, what: str) -> list[str]:
    return [_text(item, f"{what}[]") for item in _list(value, what)]


def _recipient_objects(detail: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    what = f"{key}[]"
    items = [_object(item, what) for item in _list(detail.get(key), key)]
    for item in items:
        _text(item.get("emailAddress"), f"{what}.emailAddress")
    return items


def _recipients(
    event_type: SesEventType, detail: Mapping[str, object], mail: Mapping[str, object]
) -> tuple[RecipientEvent, ...]:
    if event_type == "Bounce":
        bounce_type = _text(detail.get("bounceType"), "bounce.bounceType")
        sub_type = _optional_text(detail.get("bounceSubType"), "bounce.bounceSubType")
        return tuple(
            RecipientEvent(
                email=str(item["emailAddress"]),
                suppresses=bounce_type == "Permanent",
                bounce_type=bounce_type,
                sub_type=sub_type,
                status=_optional_text(item.get("status"), "bouncedRecipients[].status"),
                diagnostic=_optional_text(
                    item.get("diagnosticCode"), "bouncedRecipients[].diagnosticCode"
                ),
            )
            for item in _recipient_objects(detail, "bouncedRecipients")
        )
    if event_type == "Complaint":
        feedback_type = _optional_text(
            detail.get("complaintFeedbackType"), "complaint.complaintFeedbackType"
        )
        sub_type = _optional_text(detail.get("complaintSubType"), "complaint.complaintSubType")
        return tuple(
            RecipientEvent(
                email=str(item["emailAddress"]),
                suppresses=feedback_type != "not-spam",
                sub_type=sub_type,
                feedback_type=feedback_type,
            )
            for item in _recipient_objects(detail, "complainedRecipients")
        )
    if event_type == "Delivery":
        return tuple(
            RecipientEvent(email=email)
            for email in _addresses(detail.get("recipients"), "delivery.recipients")
        )
    if event_type == "DeliveryDelay":
        return tuple(
            RecipientEvent(
                email=str(item["emailAddress"]),
                sub_type=_optional_text(detail.get("delayType"), "deliveryDelay.delayType"),
                status=_optional_text(item.get("status"), "delayedRecipients[].status"),
                diagnostic=_optional_text(
                    item.get("diagnosticCode"), "delayedRecipients[].diagnosticCode"
                ),
            )
            for item in _recipient_objects(detail, "delayedRecipients")
        )
    unsubscribes_all = False
    if event_type == "Subscription":
        preferences = detail.get("newTopicPreferences")
        unsubscribes_all = (
            isinstance(preferences, dict) and preferences.get("unsubscribeAll") is True
        )
    return tuple(
        RecipientEvent(email=email, suppresses=unsubscribes_all)
        for email in _addresses(mail.get("destination"), "mail.destination")
    )


def parse_ses_event(message: str) -> SesEvent:
    """Parse an SNS ``Message`` holding an SES event, in either format, into a :class:`SesEvent`.

    Raises :class:`SnsMalformed` when the text is not a JSON object, has no known
    ``notificationType`` / ``eventType`` (both at once is refused too), lacks ``mail.messageId``, a
    timestamp, or the recipient list its type needs, or carries fields of the wrong JSON type. Only
    call it on a verified envelope's ``message``: the content decides what gets suppressed.
    """
    document = load_json_object(message, what="SES event")
    event_type, detail_key = _event_type(document)
    mail = _object(document.get("mail"), "mail")
    ses_message_id = _text(mail.get("messageId"), "mail.messageId")

    detail_value = document.get(detail_key)
    if detail_value is None and event_type in ("Send", "Reject", "RenderingFailure"):
        detail_value = {}  # tolerated: these objects carry nothing sesender uses
    detail = _object(detail_value, detail_key)

    when = detail.get("timestamp")
    if when is None:
        when = mail.get("timestamp")
    occurred_at = parse_timestamp(when, what=f"SES event {detail_key}.timestamp")

    tags = _tags(mail)
    topic_values = tags.get(TOPIC_TAG, ())
    feedback_id = (
        _optional_text(detail.get("feedbackId"), f"{detail_key}.feedbackId")
        if event_type in ("Bounce", "Complaint")
        else None
    )
    return SesEvent(
        event_type=event_type,
        ses_message_id=ses_message_id,
        occurred_at=occurred_at,
        recipients=_recipients(event_type, detail, mail),
        tags=MappingProxyType(tags),
        request_id_tag=_request_id(tags),
        topic_tag=topic_values[0] if len(topic_values) == 1 else None,
        feedback_id=feedback_id,
        link=_optional_text(detail.get("link"), "click.link") if event_type == "Click" else None,
    )
