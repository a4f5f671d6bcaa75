"""The fields of ``OutgoingEmail`` a backend test may change, typed, for ``dataclasses.replace``."""

from __future__ import annotations

from typing import TypedDict


class OutgoingChanges(TypedDict, total=False):
    """Keyword arguments of ``dataclasses.replace`` on an ``OutgoingEmail``: mypy checks each
    against the field it replaces, so a test cannot build an email the type forbids by accident."""

    request_id: int
    topic_id: str
    sender: str
    recipient: str
    subject: str
    html: str
    headers: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]
    configuration_set: str | None
    attempt: int
    source_html: str | None
