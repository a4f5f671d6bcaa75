"""Turns a claimed email into what the backend sends: pixel, tags, headers, configuration set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from sesender.backends.base import OutgoingEmail
from sesender.feedback.ses_events import REQUEST_ID_TAG, TOPIC_TAG
from sesender.models import ClaimedEmail
from sesender.tracking import TokenSigner

_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def insert_pixel(html: str, pixel_url: str) -> str:
    """Insert the 1x1 tracking image before the last ``</body>``, or append it."""
    image = (
        f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:none;border:0" />'
    )
    matches = list(_BODY_CLOSE.finditer(html))
    if not matches:
        return html + image
    position = matches[-1].start()
    return html[:position] + image + html[position:]


@dataclass(frozen=True, slots=True)
class MessageComposer:
    sender: str
    public_url: str
    signer: TokenSigner
    configuration_set: str | None
    unsubscribe_enabled: bool
    #: OPEN_TRACKING_ENABLED: whether the html carries the tracking pixel.
    open_tracking_enabled: bool = True

    def pixel_url(self, request_id: int) -> str:
        token = self.signer.sign("open", request_id)
        return f"{self.public_url}/v1/events/open?request_id={token}"

    def unsubscribe_url(self, request_id: int) -> str:
        token = self.signer.sign("unsubscribe", request_id)
        return f"{self.public_url}/v1/unsubscribe?token={token}"

    def compose(self, email: ClaimedEmail) -> OutgoingEmail:
        headers: tuple[tuple[str, str], ...] = ()
        if self.unsubscribe_enabled:
            headers = (
                ("List-Unsubscribe", f"<{self.unsubscribe_url(email.request_id)}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            )
        # SES echoes tags back in events' ``mail.tags``; their names live where events are read.
        tags = [(REQUEST_ID_TAG, str(email.request_id))]
        if email.topic_id:
            # As is: the SES backend makes tag names and values valid SES tags (ses_tag_part).
            tags.append((TOPIC_TAG, email.topic_id))
        return OutgoingEmail(
            request_id=email.request_id,
            topic_id=email.topic_id,
            sender=self.sender,
            recipient=email.email,
            subject=email.content.subject,
            html=insert_pixel(email.content.body, self.pixel_url(email.request_id))
            if self.open_tracking_enabled
            else email.content.body,
            headers=headers,
            tags=tuple(tags),
            configuration_set=self.configuration_set,
            attempt=email.attempts + 1,
            source_html=email.content.body,
            pixel_url=self.pixel_url(email.request_id) if self.open_tracking_enabled else None,
        )
