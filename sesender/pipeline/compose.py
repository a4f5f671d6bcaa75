"""Turns a claimed email into what the backend sends: merge fields rendered, pixel, tags, headers,
configuration set."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from sesender.backends.base import OutgoingEmail
from sesender.feedback.ses_events import REQUEST_ID_TAG, TOPIC_TAG
from sesender.links import CLICK_FIELD, LinkRewriter
from sesender.models import ClaimedEmail
from sesender.pipeline.pixel import PIXEL_IMAGE_HEAD, PIXEL_IMAGE_TAIL, insert_image, pixel_image
from sesender.templating import (
    EMAIL_FIELD,
    UNSUBSCRIBE_FIELD,
    MergeFields,
    render_html,
    render_text,
)
from sesender.tracking import TokenSigner

if TYPE_CHECKING:
    from sesender.config import Config


@dataclass(frozen=True, slots=True)
class MessageComposer:
    sender: str
    public_url: str
    signer: TokenSigner
    configuration_set: str | None
    unsubscribe_enabled: bool
    #: OPEN_TRACKING_ENABLED: whether the html carries the tracking pixel, for emails accepted
    #: before each email stored its own choice.
    open_tracking_enabled: bool = True
    #: rewrites a content's links once for all its emails (click tracking).
    rewriter: LinkRewriter = field(init=False, repr=False, compare=False)
    #: the pixel URL up to its token, and the pixel image up to its token with that part
    #: escaped: a token is URL-safe base64, which HTML escaping leaves as it is, so an email's
    #: image is this head, its token and the tail (the same text as ``pixel_image(url)``).
    open_url_head: str = field(init=False, repr=False, compare=False)
    open_image_head: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rewriter = LinkRewriter(public_url=self.public_url, signer=self.signer)
        object.__setattr__(self, "rewriter", rewriter)
        open_url_head = f"{self.public_url}/v1/events/open?request_id="
        object.__setattr__(self, "open_url_head", open_url_head)
        image_head = PIXEL_IMAGE_HEAD + escape(open_url_head, quote=True)
        object.__setattr__(self, "open_image_head", image_head)

    @classmethod
    def from_config(cls, config: Config, signer: TokenSigner) -> MessageComposer:
        """The composer the service builds from ``config``, signing with ``signer``: one place
        that reads the settings a composed email depends on (benchmarks and tests that must
        compose what the service composes use it too)."""
        return cls(
            sender=config.backend.aws.from_email,
            public_url=config.server.public_url,
            signer=signer,
            configuration_set=config.backend.aws.configuration_set,
            unsubscribe_enabled=config.feedback.unsubscribe_enabled,
            open_tracking_enabled=config.tracking.open_tracking_enabled,
        )

    def pixel_url(self, request_id: int) -> str:
        return self.open_url_head + self.signer.sign("open", request_id)

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
        # The topic's tag as is: the SES backend makes tag names and values valid SES tags.
        tags: tuple[tuple[str, str], ...] = (
            ((REQUEST_ID_TAG, str(email.request_id)), (TOPIC_TAG, email.topic_id))
            if email.topic_id
            else ((REQUEST_ID_TAG, str(email.request_id)),)
        )
        track_opens = self.open_tracking_enabled if email.track_opens is None else email.track_opens
        open_token = self.signer.sign("open", email.request_id) if track_opens else None
        pixel_url = None if open_token is None else self.open_url_head + open_token
        # Click tracking: the content's links are rewritten once (cached per content); what
        # differs per recipient is only the token that goes into each link.
        tracked = self.rewriter.tracked(email.content.body) if email.track_clicks else None
        click_token = self.signer.sign("click", email.request_id) if tracked else None
        subject, html = email.content.subject, email.content.body
        merge = None
        if email.data is not None:
            # A template: rendered here, once, so every backend sends the same text; the parts
            # travel along unrendered for a backend that lets the provider render them. With
            # click tracking the template is the one with its links rewritten, and the token
            # is one more value.
            values = {**email.data, EMAIL_FIELD: email.email, UNSUBSCRIBE_FIELD: unsubscribe_url}
            if tracked is not None and click_token is not None:
                html = tracked.template
                values[CLICK_FIELD] = click_token
            merge = MergeFields(subject=subject, html=html, values=values)
            subject, html = render_text(subject, values), render_html(html, values)
            tracked = click_token = None
        if tracked is not None and click_token is not None:
            body = tracked.render(click_token, "" if pixel_url is None else pixel_image(pixel_url))
        elif open_token is None:
            body = html
        else:
            image = self.open_image_head + open_token + PIXEL_IMAGE_TAIL
            body = insert_image(html, image, cached=merge is None)
        return OutgoingEmail(
            request_id=email.request_id,
            topic_id=email.topic_id,
            sender=email.content.sender or self.sender,
            recipient=email.email,
            subject=subject,
            html=body,
            headers=headers,
            tags=tags,
            configuration_set=self.configuration_set,
            attempt=email.attempts + 1,
            source_html=html,
            pixel_url=pixel_url,
            merge=merge,
            reply_to=email.content.reply_to,
            tracked=tracked,
            click_token=click_token,
        )
