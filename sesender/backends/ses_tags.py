"""SES email tags: names and values limited to ``[A-Za-z0-9_-]``, 1 to 256 characters."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sesv2.type_defs import MessageTagTypeDef

__all__ = ["kept_tag_names", "ses_tag_part", "ses_tags"]

TAG_FORBIDDEN = re.compile(r"[^A-Za-z0-9_-]")
MAX_TAG_LENGTH = 256


def ses_tag_part(value: str) -> str:
    """Make ``value`` a valid SES tag name or value: ``[A-Za-z0-9_-]``, 1 to 256 characters.

    Other characters become ``_`` (so ``topic.2024/05`` reads ``topic_2024_05``); an empty value
    becomes ``_``. Runs for every tag of every email: a value that is already letters and
    digits (a request id) skips the substitution.
    """
    if value.isascii() and value.isalnum() and len(value) <= MAX_TAG_LENGTH:
        return value
    if len(value) <= MAX_TAG_LENGTH:
        return _sanitised(value)  # tag names and topic ids: the same few strings every email
    return TAG_FORBIDDEN.sub("_", value)[:MAX_TAG_LENGTH] or "_"


@lru_cache(maxsize=1024)
def _sanitised(value: str) -> str:
    return TAG_FORBIDDEN.sub("_", value) or "_"


def ses_tags(pairs: tuple[tuple[str, str], ...]) -> list[MessageTagTypeDef]:
    """The SES tags of ``pairs`` (name, value): sanitised, keeping the first of each name.

    Every email's tags have the same names (those of its content and topic): which of them
    are kept, and under which sanitised name, is decided once per set of names
    (:func:`kept_tag_names`)."""
    kept = kept_tag_names(tuple([name for name, _ in pairs]))
    return [{"Name": name, "Value": ses_tag_part(pairs[index][1])} for index, name in kept]


@lru_cache(maxsize=256)
def kept_tag_names(names: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """(position, sanitised name) of the first tag of each sanitised name, in order."""
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        first.setdefault(ses_tag_part(name), index)
    return tuple((index, name) for name, index in first.items())
