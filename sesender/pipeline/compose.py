"""Turns a claimed email into what the backend sends: merge fields rendered, pixel, tags, headers,
configuration set."""

from __future__ import annotations

from dataclasses import dataclass

from sesender.backends.base import OutgoingEmail
from sesender.feedback.ses_events import REQUEST_ID_TAG, TOPIC_TAG
from sesender.models import ClaimedEmail
from sesender.pipeline.pixel import insert_pixel
from sesender.templating import (
    EMAIL_FIELD,
    UNSUBSCRIBE_FIELD,
    MergeFields,
    render_html,
    render_text,
)
from sesender.tracking import TokenSigner


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
        # Signed only where it is used (the headers, or a template's {{unsubscribe_url}}): a
        # token is an HMAC, and this runs for every email.
        unsubscribe_url = ""
        if self.unsubscribe_enabled or email.data is not None:
            unsubscribe_url = self.unsubscribe_url(email.request_id)
        headers: tuple[tuple[str, str], ...] = ()
        if self.unsubscribe_enabled:
            headers = (
                ("List-Unsubscribe", f"<{unsubscribe_url}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            )
        # SES echoes tags back in events' ``mail.tags``; their names live where events are read.
        tags = [(REQUEST_ID_TAG, str(email.request_id))]
        if email.topic_id:
            # As is: the SES backend makes tag names and values valid SES tags (ses_tag_part).
            tags.append((TOPIC_TAG, email.topic_id))
        subject, html = email.content.subject, email.content.body
        merge = None
        if email.data is not None:
            # A template: rendered here, once, so every backend sends the same text; the parts
            # travel along unrendered for a backend that lets the provider render them.
            values = {**email.data, EMAIL_FIELD: email.email, UNSUBSCRIBE_FIELD: unsubscribe_url}
            merge = MergeFields(subject=subject, html=html, values=values)
            subject, html = render_text(subject, values), render_html(html, values)
        pixel_url = self.pixel_url(email.request_id) if self.open_tracking_enabled else None
        return OutgoingEmail(
            request_id=email.request_id,
            topic_id=email.topic_id,
            sender=email.content.sender or self.sender,
            recipient=email.email,
            subject=subject,
            html=html if pixel_url is None else insert_pixel(html, pixel_url, cached=merge is None),
            headers=headers,
            tags=tuple(tags),
            configuration_set=self.configuration_set,
            attempt=email.attempts + 1,
            source_html=html,
            pixel_url=pixel_url,
            merge=merge,
            reply_to=email.content.reply_to,
        )
