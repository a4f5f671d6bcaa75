"""What SES would refuse in an email, checked in one place before any call.

The backends that build a real message (SES, and the outbox, which writes what SES would have
been asked to send) call :func:`check_sendable` first, so an email SES would refuse fails at once
as ``PermanentSendError``, without spending a rate-limiter token, and both refuse exactly the same
emails. The memory backend builds no message and checks nothing.
"""

from __future__ import annotations

from typing import Protocol

from sesender.backends.addresses import ascii_address
from sesender.backends.headers import require_single_line, validate_custom_headers

__all__ = ["Sendable", "check_sendable"]


class Sendable(Protocol):
    """What :func:`check_sendable` reads: an ``OutgoingEmail``, or the SES bulk path's
    per-recipient tuple (``sesender.backends.ses_bulk_call.BulkRecipient``)."""

    @property
    def sender(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def subject(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


def check_sendable(email: Sendable) -> tuple[str, str]:
    """Check ``email`` and return its sender and recipient in the 7-bit form SES takes.

    Raises :class:`~sesender.errors.PermanentSendError` for an address that is not exactly one
    address SES can send to (see :func:`~sesender.backends.addresses.ascii_address`), a subject
    with a line break, or custom headers outside SES's rules
    (:func:`~sesender.backends.headers.validate_custom_headers`).
    """
    sender = ascii_address(email.sender, field="sender")
    recipient = ascii_address(email.recipient, field="recipient")
    if email.reply_to is not None:
        ascii_address(email.reply_to, field="reply-to")
    require_single_line("subject", email.subject)
    validate_custom_headers(email.headers)
    return sender, recipient
