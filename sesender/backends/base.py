"""The interface every mail backend implements.

A backend turns :class:`OutgoingEmail` values into delivered messages. The pipeline hands it a
batch at a time (``send_batch``: at most as many emails as the rate limiter granted tokens for at
once) and gets one :data:`SendResult` per email back: the provider's message id, or the
``SendError`` (of :mod:`sesender.errors`) that says why that email was not sent. Failures are values
there, never raised, so one refused address does not hide the results of the others; the sender
pool turns them into outcomes (retry, fail, pause). ``send`` sends one email and raises instead;
backends without a batch call of their own build ``send_batch`` on it
(:func:`sesender.backends.one_by_one.send_one_by_one`). A backend owns its own concurrency: a
blocking client (boto3, file I/O) runs in the backend's own ``ThreadLane``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sesender.errors import SendError
from sesender.links import TrackedHtml
from sesender.templating import MergeFields


@dataclass(slots=True)
class OutgoingEmail:
    """Everything a backend needs to send one email to one recipient.

    Not frozen, unlike the other records: one is built for every email on the send path, and a
    frozen dataclass sets each of its 17 fields through ``object.__setattr__``, which made
    building one cost twice as much (2.6 against 1.2 us, a tenth of the pipeline's own CPU per
    email). Nothing changes one once built: backends only read it.

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
    #: rebuild one shared template for many recipients with a placeholder where the pixel goes.
    pixel_url: str | None = None
    #: Set when the email is a template: ``subject`` and ``html`` are then already rendered for
    #: this recipient (and ``source_html`` is the rendered HTML before the pixel); this keeps the
    #: template and the values it was rendered with. A backend that does not care sends
    #: ``subject``/``html`` as they are, so every backend shows the recipient the same text.
    merge: MergeFields | None = None
    #: The message's Reply-To address (SES ``ReplyToAddresses``), if it has one.
    reply_to: str | None = None
    #: Click tracking of a content sent as given: the content with its links rewritten, once
    #: per content, and this recipient's token; ``html`` is ``tracked.render(click_token,
    #: pixel)`` and ``source_html`` the content before its links were rewritten. A templated
    #: email's links are rewritten in its ``merge`` template instead (the token is a value).
    tracked: TrackedHtml | None = None
    click_token: str | None = None


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What a backend knows about its sending account (only SES knows much)."""

    can_send: bool
    max_send_rate: float | None = None
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)


#: One email's result in a batch: the provider's message id, or why it was not sent.
SendResult = str | SendError


class Backend(Protocol):
    """One way of delivering email. Implementations: ses, outbox, memory."""

    name: str

    async def send(self, email: OutgoingEmail) -> str:
        """Send one email and return the provider's message id.

        Raises TransientSendError, PermanentSendError or AccountSendError; nothing else.
        """
        ...

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """Send every email; exactly one result per email, in the same order.

        Never raises SendError: a per-email failure is that email's result, a whole-call
        failure (throttling, 5xx, timeout, connection) is the same error for each email the
        call carried. Emails of different contents may be mixed: the backend groups them.
        """
        ...

    async def account_status(self) -> AccountStatus:
        """Ask the provider whether sending is possible now (used at start and to end a pause)."""
        ...

    async def aclose(self) -> None:
        """Release clients, pools and files."""
        ...


@runtime_checkable
class LimitsItsBacklog(Protocol):
    """A backend that can say how many emails the pipeline should have with it at once.

    The sender pool then takes no more batches than that (and at least one), so emails the
    backend cannot start soon wait in the store rather than composed in memory in front of it.
    Implemented by the SES backend in bulk mode through its client process.
    """

    def emails_it_can_hold(self) -> int | None:
        """The most emails to have with this backend now; None: no limit of its own."""
        ...
