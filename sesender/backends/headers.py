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
from functools import lru_cache

from sesender.errors import PermanentSendError

__all__ = [
    "FORBIDDEN_CUSTOM_HEADERS",
    "MAX_CUSTOM_HEADERS",
    "explain_custom_headers",
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
    """Raise :class:`PermanentSendError` unless ``headers`` fit SES v2's custom-header rules.

    Runs for every email (every recipient of a bulk call, in the SES client process): the
    emails of one content carry the same header names, so what depends on the names alone is
    decided once per set of names (:func:`names_fit`, cached) and each email's values take two
    ``str`` checks each. Anything that does not pass that way goes through every check in order
    (:func:`explain_custom_headers`), which raises the first problem with its message.
    """
    headers = tuple(headers)
    if names_fit(tuple([name for name, _ in headers])):
        for name, value in headers:
            # Printable ASCII is what ``HEADER_VALUE`` matches (``str`` methods, no regex);
            # a fitting name is 1 character at least, so the sum bounds the value's length.
            if (
                not value
                or len(name) + len(value) > MAX_NAME_AND_VALUE_LENGTH
                or not (value.isascii() and value.isprintable())
            ):
                break
        else:
            return
    explain_custom_headers(headers)


@lru_cache(maxsize=256)
def names_fit(names: tuple[str, ...]) -> bool:
    """Whether header ``names`` pass every check that reads the names alone: their number,
    each name's characters, no header SES builds itself, no single-use header twice."""
    if len(names) > MAX_CUSTOM_HEADERS:
        return False
    folded = [name.lower() for name in names]
    return (
        all(HEADER_NAME.fullmatch(name) for name in names)
        and FORBIDDEN_CUSTOM_HEADERS.isdisjoint(folded)
        and all(folded.count(name) == 1 for name in SINGLE_USE_HEADERS.intersection(folded))
    )


def explain_custom_headers(headers: tuple[tuple[str, str], ...]) -> None:
    """Every custom-header check, in order: raise :class:`PermanentSendError` for the first
    one ``headers`` fails."""
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
