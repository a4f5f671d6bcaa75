"""The interface every mail backend implements.

A backend turns one :class:`OutgoingEmail` into one delivered message and returns the provider's
message id. It owns its own concurrency: a blocking client (boto3, smtplib, file I/O) runs in the
backend's own ``ThreadLane``, so the pipeline only ever awaits ``send``. Failures are raised as the
``SendError`` subclasses of :mod:`sesender.errors` and nothing else; the sender pool turns them into
values (retry, fail, pause).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sesender.templating import MergeFields


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """Everything a backend needs to send one email to one recipient.

    ``html`` already carries the tracking pixel; ``headers`` are extra headers such as
    ``List-Unsubscribe``, not validated yet: a backend that builds a real message (SES, outbox)
    checks them, with the addresses and the subject, in
    :func:`sesender.backends.sendable.check_sendable` and raises ``PermanentSendError`` for what
    SES would refuse; ``tags`` are (name, value) pairs as the pipeline knows them, which the SES
    backend turns into valid SES email tags (:func:`sesender.backends.ses.ses_tag_part`).
    """

    request_id: int
    topic_id: str
    sender: str
    recipient: str
    subject: str
    html: str
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    configuration_set: str | None = None
    attempt: int = 1
    #: The content's HTML as submitted, before the pixel went in. The text part is derived from
    #: it (see :func:`sesender.backends.text.text_part`): one conversion per content, cached,
    #: instead of one per recipient of the same content. None: derive it from ``html``.
    source_html: str | None = None
    #: The pixel URL that compose inserted into ``html`` (None: no pixel). Lets the SES backend
    #: rebuild a shared template with a ``{{...}}`` placeholder.
    pixel_url: str | None = None
    #: Set for a templated email: its unrendered subject and HTML and this recipient's values.
    #: ``subject``, ``html`` and ``source_html`` are then ALREADY rendered by sesender, so a backend
    #: that does not care sends them as they are and every backend shows the same text.
    merge: MergeFields | None = None


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What a backend knows about its sending account (only SES knows much)."""

    can_send: bool
    max_send_rate: float | None = None
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """One way of delivering email. Implementations: ses, outbox, memory."""

    name: str

    async def send(self, email: OutgoingEmail) -> str:
        """Send one email and return the provider's message id.

        Raises TransientSendError, PermanentSendError or AccountSendError; nothing else.
        """
        ...

    async def account_status(self) -> AccountStatus:
        """Ask the provider whether sending is possible now (used at start and to end a pause)."""
        ...

    async def aclose(self) -> None:
        """Release clients, pools and files."""
        ...
