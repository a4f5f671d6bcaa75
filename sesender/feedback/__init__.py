"""Feedback from SES: SNS message verification and SES event parsing, as pure logic.

The HTTP webhook (and the SQS poller) read a body, call :func:`parse_envelope`, ``await``
:meth:`SnsVerifier.verify`, then :func:`parse_ses_event` on the verified ``message``. Nothing here
does I/O: the certificate download and the clock are injected into :class:`SnsVerifier`.
"""

from sesender.feedback.ses_events import (
    REQUEST_ID_TAG,
    TOPIC_TAG,
    RecipientEvent,
    SesEvent,
    SesEventType,
    parse_ses_event,
)
from sesender.feedback.sns import (
    MAX_ENVELOPE_BYTES,
    MESSAGE_TYPES,
    MessageType,
    RejectionReason,
    SnsEnvelope,
    SnsVerifier,
    SnsVerifierStatistics,
    check_cert_url,
    check_subscribe_url,
    parse_envelope,
    string_to_sign,
)

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "REQUEST_ID_TAG",
    "TOPIC_TAG",
    "MessageType",
    "RecipientEvent",
    "RejectionReason",
    "SesEvent",
    "SesEventType",
    "SnsEnvelope",
    "SnsVerifier",
    "SnsVerifierStatistics",
    "check_cert_url",
    "check_subscribe_url",
    "parse_envelope",
    "parse_ses_event",
    "string_to_sign",
]
