"""Parsing and validating ``POST /v1/messages`` bodies: pure functions, no I/O.

A body is refused whole (400, nothing stored) when its shape is wrong: not an object, no
``messages`` list, a message without subject or content, a subject with CR/LF, an unparseable
``scheduled_at``, more recipients than allowed. Individual addresses are not a reason to refuse the
request: invalid ones are counted in ``errors`` and listed (capped) in ``rejected``, duplicates
within a message are sent once, and the valid ones are accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sesender.addresses import check_address
from sesender.errors import ApiError
from sesender.models import NewMessage

#: How many rejected addresses the response lists (all are counted in ``errors``).
REJECTED_LIST_CAP = 100
MAX_TOPIC_ID_LENGTH = 256
MAX_SUBJECT_LENGTH = 998  # RFC 5322 line length
ORIGINAL_FORMAT = "%Y-%m-%d %H:%M:%S"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Rejected:
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedSubmission:
    messages: tuple[NewMessage, ...]
    scheduled_at: datetime | None
    total: int
    accepted: int
    duplicates: int
    rejected_count: int
    rejected: tuple[Rejected, ...] = field(default=())


def body_digest(payload: Any) -> bytes:
    """A digest of the parsed body, independent of key order and white space."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from exc


def parse_scheduled_at(value: Any, timezone: ZoneInfo) -> datetime | None:
    """Absent or empty: send now. ``YYYY-MM-DD HH:MM:SS`` is read in ``timezone`` (the original
    service's format); ISO 8601 with an offset is taken as is, without one in ``timezone``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "scheduled_at must be a string")
    text = value.strip()
    try:
        parsed = datetime.strptime(text, ORIGINAL_FORMAT)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(
                400,
                f"scheduled_at {value!r} is not 'YYYY-MM-DD HH:MM:SS' or ISO 8601 with an offset",
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone)
    return parsed


def is_unicode(text: str) -> bool:
    """False for text holding a lone UTF-16 surrogate: JSON allows one (``"\\ud800"``), but no
    UTF-8 encoder (SQLite's, the email package's) can write it, so storing it would fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_unicode(value: str, name: str, index: int) -> None:
    if not is_unicode(value):
        raise ApiError(400, f"messages[{index}].{name} must not contain lone UTF-16 surrogates")


def _text_field(message: dict[str, Any], name: str, index: int) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"messages[{index}].{name} must be a non-empty string")
    _require_unicode(value, name, index)
    return value


def parse_submission(payload: Any, *, max_recipients: int, timezone: ZoneInfo) -> ParsedSubmission:
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object with a 'messages' list")
    raw_messages = payload.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ApiError(400, "'messages' must be a non-empty list")
    scheduled_at = parse_scheduled_at(payload.get("scheduled_at"), timezone)

    total = 0
    for index, message in enumerate(raw_messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{index}] must be an object")
        emails = message.get("emails")
        if not isinstance(emails, list):
            raise ApiError(400, f"messages[{index}].emails must be a list of strings")
        total += len(emails)
    if total > max_recipients:
        raise ApiError(
            400, f"Too many recipients: {total} in one request (at most {max_recipients})"
        )

    messages: list[NewMessage] = []
    rejected: list[Rejected] = []
    rejected_count = duplicates = 0
    for index, message in enumerate(raw_messages):
        topic_id = message.get("topic_id", "")
        if topic_id is None:
            topic_id = ""
        if not isinstance(topic_id, str):
            raise ApiError(400, f"messages[{index}].topic_id must be a string")
        if len(topic_id) > MAX_TOPIC_ID_LENGTH or _CONTROL.search(topic_id):
            raise ApiError(
                400,
                f"messages[{index}].topic_id must be at most {MAX_TOPIC_ID_LENGTH} characters"
                " without control characters",
            )
        _require_unicode(topic_id, "topic_id", index)
        subject = _text_field(message, "subject", index)
        if len(subject) > MAX_SUBJECT_LENGTH or "\r" in subject or "\n" in subject:
            raise ApiError(
                400,
                f"messages[{index}].subject must be one line of at most {MAX_SUBJECT_LENGTH}"
                " characters",
            )
        content = _text_field(message, "content", index)
        if "\x00" in content or "\x00" in subject:
            raise ApiError(400, f"messages[{index}] must not contain NUL characters")
        seen: set[str] = set()
        accepted: list[str] = []
        for address in message["emails"]:
            if not isinstance(address, str):
                rejected_count += 1
                if len(rejected) < REJECTED_LIST_CAP:
                    rejected.append(Rejected(str(address)[:320], "not a string"))
                continue
            check = check_address(address.strip())
            if check.normalized is None:
                rejected_count += 1
                if len(rejected) < REJECTED_LIST_CAP:
                    rejected.append(Rejected(address[:320], check.reason or "invalid"))
                continue
            key = check.normalized.lower()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            accepted.append(check.normalized)
        messages.append(
            NewMessage(topic_id=topic_id, subject=subject, body=content, emails=tuple(accepted))
        )
    return ParsedSubmission(
        messages=tuple(messages),
        scheduled_at=scheduled_at,
        total=total,
        accepted=sum(len(m.emails) for m in messages),
        duplicates=duplicates,
        rejected_count=rejected_count,
        rejected=tuple(rejected),
    )


def due_at_ms(scheduled_at: datetime | None, now_ms: int) -> int:
    if scheduled_at is None:
        return now_ms
    epoch_ms = int(scheduled_at.timestamp() * 1000)
    return max(epoch_ms, 0)


IDEMPOTENCY_WINDOW = timedelta(hours=24)
