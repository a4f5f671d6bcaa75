"""The event types endpoints subscribe to, and the JSON body each event is delivered as.

The body follows the Standard Webhooks convention ``{"type", "timestamp", "data"}`` (plus the
event ``id``, the same as the ``webhook-id`` header): ``data`` always names the email
(``request_id``, ``topic_id``, ``email``, SES ``message_id`` when known) and adds what is particular
to the type. The JSON schema of each type is in the OpenAPI description (``WebhookEvent*``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from sesender.webhooks.models import PendingEvent

EMAIL_EVENT_TYPES: Final = (
    "email.sent",
    "email.failed",
    "email.delivered",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.unsubscribed",
    "email.suppressed",
    "email.stopped",
)
#: Every type an endpoint may subscribe to, in the order the documentation lists them.
EVENT_TYPES: Final = (*EMAIL_EVENT_TYPES, "topic.completed")
#: Sent only by ``POST /v1/webhooks/{id}/test``, whatever the endpoint subscribes to.
TEST_EVENT_TYPE: Final = "webhook.test"

#: Types whose ``data`` says whether the address is on the suppression list after the event.
_SAYS_SUPPRESSED: Final = frozenset({"email.bounced", "email.complained", "email.unsubscribed"})


def iso_utc(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _details(event: PendingEvent) -> dict[str, Any]:
    if not event.detail:
        return {}
    try:
        parsed = json.loads(event.detail)
    except ValueError:
        return {"text": event.detail}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def event_data(event: PendingEvent) -> dict[str, Any]:
    """The ``data`` object of an event."""
    if event.event_type == "topic.completed":
        return {"topic_id": event.topic_id}
    if event.event_type == TEST_EVENT_TYPE:
        return {"endpoint_id": event.endpoint_id, **_details(event)}
    details = _details(event)
    data: dict[str, Any] = {
        "request_id": event.request_id,
        "topic_id": event.topic_id,
        "email": event.email,
        "message_id": event.message_id,
    }
    match event.event_type:
        case "email.failed":
            data["error"] = details.get("error")
            data["failure_kind"] = details.get("failure_kind")
        case "email.bounced":
            data["bounce_type"] = details.get("bounce_type")
            data["bounce_sub_type"] = details.get("sub_type")
            data["diagnostic"] = details.get("diagnostic")
        case "email.complained":
            data["feedback_type"] = details.get("feedback_type")
        case "email.clicked":
            link = details.get("link", details.get("url"))
            data["link"] = link if isinstance(link, str) else None
        case _:
            pass
    if event.event_type in _SAYS_SUPPRESSED:
        data["suppressed"] = bool(event.suppressed)
    if event.event_type not in ("email.failed",) and details:
        data["details"] = details
    return data


def event_body(event: PendingEvent) -> bytes:
    """The exact bytes delivered (and signed) for an event: the same on every retry."""
    document = {
        "id": event.event_id,
        "type": event.event_type,
        "timestamp": iso_utc(event.occurred_at_ms),
        "data": event_data(event),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
