"""Parsing and validating ``POST /v1/messages`` bodies: pure functions, no I/O.

A body is refused whole (400, nothing stored) when its shape is wrong: not an object, no
``messages`` list, a message without subject or content, a subject with CR/LF, an unparseable
``scheduled_at``, more recipients than allowed. Individual addresses are not a reason to refuse the
request: invalid ones are counted in ``errors`` and listed (capped) in ``rejected``, duplicates
within a message are sent once, and the valid ones are accepted.

``track_opens`` / ``track_clicks`` (booleans, per message) choose open and click tracking for the
message's emails; absent or null, the service's settings (OPEN_TRACKING_ENABLED, TRACK_CLICKS)
decide, at submission. With click tracking the content's tracked links are found here, once per
message, and stored with it (:mod:`sesender.links`).

A message with ``data`` or with recipient objects (``{"email": ..., "data": {...}}``) is a template
(:class:`Template`, rules in :mod:`sesender.templating`): the same holds per recipient, and a
recipient whose data is unusable or lacks a field the template uses is refused in ``rejected`` with
the reason. Unusable message-level ``data`` refuses the request, like any malformed message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sesender.addresses import check_address
from sesender.errors import ApiError
from sesender.links import link_urls
from sesender.models import NewMessage
from sesender.senders import SenderPolicy, parse_address_field
from sesender.templating import (
    MAX_FIELDS,
    PLACEHOLDER,
    PROVIDED_FIELDS,
    UNSUBSCRIBE_FIELD,
    DataError,
    field_names,
    normalize_data,
)

#: The keys a recipient object may have.
ITEM_KEYS = frozenset({"email", "data"})
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


def _tracking_flag(message: dict[str, Any], name: str, default: bool, index: int) -> bool:
    value = message.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"messages[{index}].{name} must be true or false")
    return value


def parse_submission(
    payload: Any,
    *,
    max_recipients: int,
    timezone: ZoneInfo,
    unsubscribe_available: bool = True,
    senders: SenderPolicy | None = None,
    track_opens: bool = True,
    track_clicks: bool = False,
    public_url: str = "",
) -> ParsedSubmission:
    """The body checked and split into messages; ``unsubscribe_available`` says whether a
    template may use ``{{unsubscribe_url}}`` (UNSUBSCRIBE_ENABLED); ``senders`` which ``from``
    a message may have (None: none but the default); ``track_opens`` and ``track_clicks`` are
    the service's defaults, ``public_url`` its URL (links to it are never tracked)."""
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
            raise ApiError(
                400,
                f"messages[{index}].emails must be a list of addresses or"
                ' {"email": ..., "data": {...}} objects',
            )
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
        sender, reply_to = _sender_fields(message, index, senders)
        opens = _tracking_flag(message, "track_opens", track_opens, index)
        clicks = _tracking_flag(message, "track_clicks", track_clicks, index)
        if message.get("data") is not None or any(isinstance(i, dict) for i in message["emails"]):
            template = Template.of(message, subject, content, index, unsubscribe_available)
            parsed_message, dropped, refused = template.recipients(topic_id, message["emails"])
        else:
            parsed_message, dropped, refused = plain_recipients(
                topic_id, subject, content, message["emails"]
            )
        messages.append(
            replace(
                parsed_message,
                sender=sender,
                reply_to=reply_to,
                track_opens=opens,
                track_clicks=clicks,
                links=link_urls(content, own_url=public_url) if clicks else (),
            )
        )
        duplicates += dropped
        rejected_count += len(refused)
        rejected.extend(refused[: REJECTED_LIST_CAP - len(rejected)])
    return ParsedSubmission(
        messages=tuple(messages),
        scheduled_at=scheduled_at,
        total=total,
        accepted=sum(len(m.emails) for m in messages),
        duplicates=duplicates,
        rejected_count=rejected_count,
        rejected=tuple(rejected),
    )


def _sender_fields(
    message: dict[str, Any], index: int, senders: SenderPolicy | None
) -> tuple[str | None, str | None]:
    """``messages[index]``'s ``from`` (None: the default sender) and ``reply_to``, or a 400."""
    raw_from = message.get("from")
    if raw_from is not None and senders is None:
        raise ApiError(400, f"messages[{index}].from is not accepted here")
    sender = None if senders is None else senders.sender_of(raw_from, index)
    raw_reply_to = message.get("reply_to")
    reply_to = (
        None
        if raw_reply_to is None
        else parse_address_field(raw_reply_to, f"messages[{index}].reply_to")
    )
    return sender, reply_to


def plain_recipients(
    topic_id: str, subject: str, content: str, items: list[Any]
) -> tuple[NewMessage, int, list[Rejected]]:
    """A message that is not a template: its valid addresses, each once (the first kept), with
    the number of duplicates dropped and the refused items."""
    seen: set[str] = set()
    accepted: list[str] = []
    refused: list[Rejected] = []
    duplicates = 0
    for address in items:
        if not isinstance(address, str):
            refused.append(Rejected(str(address)[:320], "not a string"))
            continue
        check = check_address(address.strip())
        if check.normalized is None:
            refused.append(Rejected(address[:320], check.reason or "invalid"))
            continue
        key = check.normalized.lower()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append(check.normalized)
    message = NewMessage(topic_id=topic_id, subject=subject, body=content, emails=tuple(accepted))
    return message, duplicates, refused


@dataclass(frozen=True, slots=True)
class Template:
    """A message that uses merge fields: its defaults and the fields its subject and HTML use.

    Each recipient is checked on its own: one whose data is unusable, or lacks a field the
    template uses, is refused (listed in ``rejected`` with the reason) and the others go ahead.
    What is stored per recipient is only the fields the template uses.
    """

    subject: str
    content: str
    defaults: Mapping[str, str]
    #: the fields the template uses that data must provide (``email`` and ``unsubscribe_url``
    #: are sesender's).
    needed: frozenset[str]
    subject_fields: frozenset[str]
    #: the data field of each placeholder in the subject, in order, repeats included.
    subject_slots: tuple[str, ...]
    #: the subject's length without those placeholders.
    subject_fixed_length: int

    @classmethod
    def of(
        cls,
        message: dict[str, Any],
        subject: str,
        content: str,
        index: int,
        unsubscribe_available: bool,
    ) -> Template:
        """The template of ``messages[index]``, or a 400 for what is wrong with the message as a
        whole (its ``data`` defaults, an unsubscribe link the service cannot provide)."""
        raw_defaults = message.get("data")
        try:
            defaults = normalize_data({} if raw_defaults is None else raw_defaults)
        except DataError as exc:
            raise ApiError(400, f"messages[{index}].{exc}") from None
        subject_fields = field_names(subject)
        used = subject_fields | field_names(content)
        if UNSUBSCRIBE_FIELD in used and not unsubscribe_available:
            raise ApiError(
                400,
                f"messages[{index}] uses {{{{{UNSUBSCRIBE_FIELD}}}}} but this service sends no"
                " unsubscribe links (UNSUBSCRIBE_ENABLED is off)",
            )
        slots = [m for m in PLACEHOLDER.finditer(subject) if m.group(1) not in PROVIDED_FIELDS]
        return cls(
            subject=subject,
            content=content,
            defaults=defaults,
            needed=used - PROVIDED_FIELDS,
            subject_fields=subject_fields - PROVIDED_FIELDS,
            subject_slots=tuple(match.group(1) for match in slots),
            subject_fixed_length=len(subject) - sum(len(match.group(0)) for match in slots),
        )

    def recipients(self, topic_id: str, items: list[Any]) -> tuple[NewMessage, int, list[Rejected]]:
        """Like :func:`plain_recipients`, each accepted address with its values."""
        seen: set[str] = set()
        accepted: list[str] = []
        values: list[Mapping[str, str]] = []
        refused: list[Rejected] = []
        duplicates = 0
        for item in items:
            address: object
            data: object = None
            if isinstance(item, str):
                address = item
            elif isinstance(item, dict):
                address, data = item.get("email"), item.get("data")
                if not item.keys() <= ITEM_KEYS:
                    unknown = sorted(set(item) - ITEM_KEYS)
                    refused.append(Rejected(_shown(address, item), _unknown_keys(unknown)))
                    continue
                if not isinstance(address, str):
                    refused.append(Rejected(_shown(address, item), "email must be a string"))
                    continue
            else:
                refused.append(Rejected(str(item)[:320], "not a string or an object"))
                continue
            check = check_address(address.strip())
            if check.normalized is None:
                refused.append(Rejected(address[:320], check.reason or "invalid"))
                continue
            key = check.normalized.lower()
            if key in seen:  # whatever its data: the first is the one sent
                duplicates += 1
                continue
            try:
                fields = self.fields_for(data)
            except DataError as exc:
                refused.append(Rejected(address[:320], str(exc)))
                continue
            seen.add(key)
            accepted.append(check.normalized)
            values.append(fields)
        message = NewMessage(
            topic_id=topic_id,
            subject=self.subject,
            body=self.content,
            emails=tuple(accepted),
            data=tuple(values),
        )
        return message, duplicates, refused

    def fields_for(self, data: object) -> Mapping[str, str]:
        """The values one recipient's email needs (its data over the defaults), or DataError."""
        merged = self.defaults
        if data is not None:
            own = normalize_data(data)
            if own:
                merged = {**self.defaults, **own} if self.defaults else own
                if len(merged) > MAX_FIELDS:
                    raise DataError(
                        f"data and the message's data have more than {MAX_FIELDS} fields"
                    )
        if not self.needed <= merged.keys():
            missing = sorted(self.needed - merged.keys())
            plural = "s" if len(missing) > 1 else ""
            raise DataError(f"no value for merge field{plural} {', '.join(missing)}")
        # Usually the data holds exactly the fields used: then it is the recipient's values.
        fields = merged if len(merged) == len(self.needed) else {n: merged[n] for n in self.needed}
        for name in self.subject_fields:
            if "\r" in fields[name] or "\n" in fields[name]:
                raise DataError(f"data.{name} is used in the subject and holds a line break")
        if self.subject_slots:
            # The merged subject's length without rendering it ({{email}} and {{unsubscribe_url}}
            # count as empty: the backend checks the final subject before sending anyway).
            length = self.subject_fixed_length
            for name in self.subject_slots:
                length += len(fields[name])
            if length > MAX_SUBJECT_LENGTH:
                raise DataError(
                    f"the merged subject is longer than {MAX_SUBJECT_LENGTH} characters"
                )
        return fields


def _shown(address: object, item: dict[str, Any]) -> str:
    """What ``rejected`` names for a refused object: its address when it has one."""
    return (address if isinstance(address, str) else json.dumps(item, default=str))[:320]


def _unknown_keys(keys: list[str]) -> str:
    names = ", ".join(repr(key) for key in keys[:5])
    return f"unknown key{'s' if len(keys) > 1 else ''} {names} (an item has email and data)"


def due_at_ms(scheduled_at: datetime | None, now_ms: int) -> int:
    if scheduled_at is None:
        return now_ms
    epoch_ms = int(scheduled_at.timestamp() * 1000)
    return max(epoch_ms, 0)


IDEMPOTENCY_WINDOW = timedelta(hours=24)
