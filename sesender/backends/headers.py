"""Header checks shared by the backends that build real messages (SES and outbox).

SES v2 accepts custom headers with ``Simple`` content but enforces limits botocore does not check
(at most 15; names of 1-126 printable ASCII characters without ':'; values of 1-995; no header
SES builds itself): a violation would come back as a ``BadRequestException`` per email, after a
rate limiter token was spent. Checking here, before the call, fails the email at once with a message
that says what is wrong. The outbox applies the same rules so that a message it accepts is one SES
would accept too.

A carriage return or line feed in any header value would let its author add headers of their own
(``Subject: hi\\r\\nBcc: everyone``): it is refused everywhere, never stripped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sesender.errors import PermanentSendError

__all__ = [
    "FORBIDDEN_CUSTOM_HEADERS",
    "MAX_CUSTOM_HEADERS",
    "require_single_line",
    "validate_custom_headers",
]

MAX_CUSTOM_HEADERS = 15
MAX_NAME_LENGTH = 126
MAX_VALUE_LENGTH = 995
MAX_NAME_AND_VALUE_LENGTH = 996
# SES builds these itself from the request; it refuses them as custom headers (the SES
# developer guide's "Amazon SES header fields").
FORBIDDEN_CUSTOM_HEADERS = frozenset(
    name.lower()
    for name in (
        "BCC",
        "CC",
        "Content-Disposition",
        "Content-Type",
        "Date",
        "From",
        "Message-ID",
        "MIME-Version",
        "Reply-To",
        "Return-Path",
        "Subject",
        "To",
    )
)
# SES allows each of these at most once.
SINGLE_USE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
INVALID_HEADERS = "InvalidHeaders"
# Checked for every email: one regex match, not a Python loop over the characters.
HEADER_NAME = re.compile(rf"[!-9;-~]{{1,{MAX_NAME_LENGTH}}}")
HEADER_VALUE = re.compile(rf"[ -~]{{1,{MAX_VALUE_LENGTH}}}")


def require_single_line(field: str, value: str) -> None:
    """Refuse a value that contains CR or LF (header injection), naming the field."""
    if "\r" in value or "\n" in value:
        raise PermanentSendError(
            f"{field} contains a line break, which would inject headers", code=INVALID_HEADERS
        )


def is_header_name(name: str) -> bool:
    """Printable ASCII (33-126) except ':', 1 to 126 characters."""
    return HEADER_NAME.fullmatch(name) is not None


def is_header_value(value: str) -> bool:
    """Printable ASCII (32-126, so spaces are allowed), 1 to 995 characters."""
    return HEADER_VALUE.fullmatch(value) is not None


def validate_custom_headers(headers: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`PermanentSendError` unless ``headers`` fit SES v2's custom-header rules."""
    headers = list(headers)
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise PermanentSendError(
            f"{len(headers)} custom headers; SES allows at most {MAX_CUSTOM_HEADERS}",
            code=INVALID_HEADERS,
        )
    seen: set[str] = set()
    for name, value in headers:
        require_single_line(f"header {name!r}", name)
        require_single_line(f"header {name!r}", value)
        if not is_header_name(name):
            raise PermanentSendError(
                f"invalid header name {name!r}: 1-126 printable ASCII characters, no ':'",
                code=INVALID_HEADERS,
            )
        if not is_header_value(value):
            raise PermanentSendError(
                f"invalid value for header {name}: 1-995 printable ASCII characters",
                code=INVALID_HEADERS,
            )
        if len(name) + len(value) > MAX_NAME_AND_VALUE_LENGTH:
            raise PermanentSendError(
                f"header {name}: name and value together exceed {MAX_NAME_AND_VALUE_LENGTH}",
                code=INVALID_HEADERS,
            )
        folded = name.lower()
        if folded in FORBIDDEN_CUSTOM_HEADERS:
            raise PermanentSendError(
                f"header {name} cannot be set as a custom header", code=INVALID_HEADERS
            )
        if folded in SINGLE_USE_HEADERS and folded in seen:
            raise PermanentSendError(f"header {name} appears twice", code=INVALID_HEADERS)
        seen.add(folded)
