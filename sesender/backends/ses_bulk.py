"""SES ``SendBulkEmail`` requests: which emails can share one call, and what that call says.

One bulk call carries one template (subject, HTML, text, given inline) and up to 50 entries,
each with its own recipient, replacement data (a JSON object), headers and tags; SES fills the
template's ``{{name}}`` placeholders from each entry's data. The recipient must see exactly what
one ``SendEmail`` of the same email would show, so an email goes into a bulk call only when that
is certain, and otherwise the SES backend sends it alone (see docs/architecture.md, "SES bulk
calls"):

- **What varies per recipient goes into the data, and only as safe text.** AWS documents that
  inline templates support "only simple substitutions" but not whether a value is HTML-escaped
  (its stored templates escape ``& < > " ' ` =`` the Handlebars way). So only a *tail* of each
  varying value is left to SES: the longest end of it made of characters no escaping changes,
  with no line breaks and no leading, trailing or doubled spaces (:func:`split_value`). The rest
  (the *prefix*, e.g. ``https://host/v1/events/open?request_id=`` of the pixel URL) is written
  into the template itself, escaped, and becomes part of the grouping key: emails whose
  prefixes differ do not share a call. Then, for every merge email, substituting its tails into
  the template must give, to the byte, the subject and HTML sesender rendered (whatever
  escaping the renderer chose), or the email goes alone.
- **The template must mean the same to SES as to sesender.** A literal ``{{`` or ``}}`` anywhere
  in the subject, HTML or text of plain content, braces next to a placeholder (``{{{x}}}``), a
  placeholder after a backslash, inside a tag other than within a quoted attribute value after
  some literal text, after a ``&`` that could make it a character reference, or inside a link's
  text: any of these sends the content's emails one by one. In a link's ``href`` the text part
  prints the target after the link's text unless they are equal, so a link whose text could
  equal its rendered target goes alone too.
- **The text part is the template's text with the same substitutions.** With those rules,
  converting the rendered HTML to text gives the same result as substituting into the text of
  the template, which is converted once per content.
- **Tracked links** (click tracking): a content's links are rewritten once
  (:class:`sesender.links.TrackedHtml`); its template has ``{{sesender_click_token}}`` where each
  recipient's token goes, and each entry's data carries that token. A templated email's token is
  one more merge value, so the rules above cover it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape, unescape
from operator import itemgetter
from typing import TYPE_CHECKING, Protocol

import orjson

from sesender.addresses import bare_address
from sesender.backends.addresses import ascii_address
from sesender.backends.base import OutgoingEmail
from sesender.backends.sendable import check_sendable
from sesender.backends.ses_tags import ses_tags
from sesender.backends.text import html_to_text
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)
from sesender.links import CLICK_FIELD
from sesender.pipeline.pixel import (
    PIXEL_IMAGE_HEAD,
    PIXEL_IMAGE_TAIL,
    PIXEL_POSITIONS,
    insert_pixel,
    pixel_image,
)

if TYPE_CHECKING:
    from mypy_boto3_sesv2.type_defs import (
        BulkEmailEntryResultTypeDef,
        BulkEmailEntryTypeDef,
        EmailTemplateContentTypeDef,
        MessageTagTypeDef,
        SendBulkEmailRequestTypeDef,
    )

__all__ = [
    "MAX_BULK_ENTRIES",
    "PIXEL_FIELD",
    "BulkKey",
    "BulkTemplate",
    "build_bulk_request",
    "bulk_key",
    "bulk_template",
    "chunk_sizes",
    "entry_result",
    "split_value",
]

#: SES takes at most 50 destinations in one bulk call.
MAX_BULK_ENTRIES = 50
#: The template field that holds the tail of an email's pixel URL (a merge field of the same
#: name sends that email alone).
PIXEL_FIELD = "sesender_pixel_token"

# A merge placeholder as sesender's templates write it (spaces allowed inside the braces).
PLACEHOLDER = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")
# A placeholder as the filled template gives it to SES.
SES_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
BRACES = re.compile(r"\{\{|\}\}")
# One character that Handlebars-style escaping changes, a brace, a backslash or whitespace
# other than a plain space; and a run of none of these and no space either.
UNSAFE_CHARACTER = re.compile(r"[^\S ]|[&<>\"'`={}\\]")
SAFE_TAIL = re.compile(r"[^\s&<>\"'`={}\\]*")
# Everything up to the last character that Handlebars-style escaping changes, a brace, a
# backslash or whitespace other than a plain space (spaces are looked at separately).
LAST_UNSAFE = re.compile(r"(?s:.*)(?:[^\S ]|[&<>\"'`={}\\])")
# A placeholder preceded by what could join it into a character reference (``&no{{x}}``).
CHARACTER_REFERENCE_START = re.compile(r"&[#A-Za-z0-9]*\Z")
# Private-use characters: they stand in for a placeholder's braces while the text is made.
SENTINEL_OPEN = "\ue000"
SENTINEL_CLOSE = "\ue001"
# Inside a tag, a placeholder must follow literal text within a quoted attribute value.
QUOTED_VALUE_BEFORE = re.compile(r"""=\s*(?:"[^"<>]+|'[^'<>]+)\Z""")
HREF = re.compile(r"""\shref\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")
LINK_OPEN = re.compile(r"<a[\s>/]", re.IGNORECASE)
LINK_CLOSE = re.compile(r"</a[\s>]", re.IGNORECASE)

# The name of a (name, value) pair, in C: the header and tag names of every email's key.
FIRST = itemgetter(0)
#: The keys of plain contents, kept so that the emails of one content share one key object
#: (built once, not per email: a frozen dataclass's construction is most of ``bulk_key``'s
#: cost); emptied when it holds this many (contents are few at any one time).
KEYS: dict[tuple[object, ...], BulkKey] = {}
MAX_KEPT_KEYS = 32
#: The last pixel URL prefix :func:`split_pixel_url` found (one item, replaced, never grown).
LAST_PIXEL_PREFIX = [""]
#: Longer contents have their pixel halves cut for every email rather than kept.
MAX_KEPT_HALVES = 200_000


def compact_json(values: Mapping[str, str]) -> str:
    """An entry's replacement data as SES reads it: a JSON object, written by ``orjson`` (a
    tenth of ``json.dumps``'s CPU for these small objects, 50 per call)."""
    return orjson.dumps(values).decode()


# Per-entry status -> how that email's attempt ended. Statuses not listed (FAILED and any
# future one) are transient: the email is retried through the rate limiter.
PERMANENT_STATUSES = frozenset({"MESSAGE_REJECTED", "INVALID_PARAMETER"})
THROTTLED_STATUSES = frozenset({"ACCOUNT_THROTTLED"})
# The sender's identity cannot send: that sender's emails fail (``config``), others go on.
SENDER_STATUSES = frozenset({"MAIL_FROM_DOMAIN_NOT_VERIFIED"})
# The account, its configuration set or its sending setup cannot send anything: pause, fail
# nothing. TEMPLATE_NOT_FOUND, CONFIGURATION_SET_NOT_FOUND and INVALID_SENDING_POOL_NAME name no
# email's fault either (the template is inline; the set and pool come from configuration).
ACCOUNT_STATUSES = frozenset(
    {
        "ACCOUNT_SUSPENDED",
        "ACCOUNT_SENDING_PAUSED",
        "ACCOUNT_DAILY_QUOTA_EXCEEDED",
        "CONFIGURATION_SET_SENDING_PAUSED",
        "TEMPLATE_NOT_FOUND",
        "CONFIGURATION_SET_NOT_FOUND",
        "INVALID_SENDING_POOL_NAME",
    }
)


@lru_cache(maxsize=16)
def has_braces(text: str) -> bool:
    """Whether ``text`` holds ``{{`` or ``}}``. Once per content: emails of one claim share
    their content's strings (and so their cached hash); a one-character search first, since
    searching for two characters costs ten times as much."""
    return ("{" in text and "{{" in text) or ("}" in text and "}}" in text)


def split_value(value: str) -> tuple[str, str]:
    """Split ``value`` into (prefix, tail): the tail is the longest end of it that SES can
    substitute exactly as sesender renders it (see the module docstring); it may be empty.

    One backward pass, no regex scan from every position: it runs for every email.
    """
    if value.endswith(" "):
        return value, ""
    last = LAST_UNSAFE.match(value)
    cut = last.end() if last else 0
    double = value.rfind("  ", cut)
    if double >= 0:
        cut = double + 2
    while cut < len(value) and value[cut] == " ":
        cut += 1
    return value[:cut], value[cut:]


@dataclass(frozen=True, slots=True)
class BulkKey:
    """What emails of one bulk call share: equal keys, one template.

    ``html`` is the content's HTML before the pixel, with each varying value's prefix already
    written in (escaped) and ``{{name}}`` where its tail goes; ``subject`` likewise (plain).
    ``pixel_url`` is the pixel URL as the template has it: its prefix, then the placeholder of
    its tail when it has one (None: no pixel).
    """

    sender: str
    configuration_set: str | None
    subject: str
    html: str
    pixel_url: str | None
    header_names: tuple[str, ...]
    tag_names: tuple[str, ...]
    #: Reply-To is one value for the whole call (``ReplyToAddresses``), like the sender.
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class BulkTemplate:
    """The inline template of one bulk call."""

    subject: str
    html: str
    text: str


def bulk_key(email: OutgoingEmail) -> tuple[BulkKey, dict[str, str]] | None:
    """The group ``email`` can share a bulk call with, and its replacement data; None when it
    must be sent alone with ``SendEmail`` (see the module docstring)."""
    data: dict[str, str] = {}
    tracked = email.tracked
    if email.merge is None:
        subject, html = email.subject, email.source_html
        if html is None:
            if email.pixel_url is not None or tracked is not None:
                return None  # the pixel cannot be taken out again
            html = email.html
        if has_braces(subject) or has_braces(html):
            return None
        if tracked is not None:
            # Click tracking: the template is the content with its links rewritten once, the
            # recipient's token its replacement data; the email must be exactly that.
            token = email.click_token
            pixel = "" if email.pixel_url is None else pixel_image(email.pixel_url)
            if token is None or email.html != tracked.render(token, pixel):
                return None
            html = tracked.template
            data[CLICK_FIELD] = token
    else:
        template = email.merge
        if PIXEL_FIELD in template.values:
            return None
        subject_and_html = fill_prefixes(template.subject, template.html, template.values, data)
        if subject_and_html is None:
            return None
        subject, html = subject_and_html
        # What SES will make of it must be, to the byte, what sesender rendered (whatever
        # escaping the renderer chose): checked for every email, it costs one substitution.
        if substitute(html, data) != email.source_html or substitute(subject, data) != (
            email.subject
        ):
            return None
    pixel_url: str | None = None
    if email.pixel_url is not None:
        pixel_url, tail = split_pixel_url(email.pixel_url)
        if tracked is None and not (
            pixel_split_inserted(email.html, email.source_html or "", pixel_url, tail)
            if email.merge is None
            # A rendered template's HTML is seen once: searched, not cached.
            else email.html == insert_pixel(email.source_html or "", email.pixel_url, cached=False)
        ):
            return None  # not the pixel compose inserts: nothing to rebuild it from
        if "{" in pixel_url or "}" in pixel_url:
            return None  # SES would read braces written into the template
        if tail:
            data[PIXEL_FIELD] = tail
            pixel_url += "{{" + PIXEL_FIELD + "}}"
    elif tracked is None and email.source_html is not None and email.html != email.source_html:
        return None
    fields = (
        email.sender,
        email.configuration_set,
        subject,
        html,
        pixel_url,
        tuple(map(FIRST, email.headers)),
        tuple(map(FIRST, email.tags)),
        email.reply_to,
    )
    if email.merge is not None:
        return BulkKey(*fields), data  # a rendered template's key is seen once: not kept
    key = KEYS.get(fields)
    if key is None:
        if len(KEYS) >= MAX_KEPT_KEYS:
            KEYS.clear()
        key = KEYS[fields] = BulkKey(*fields)
    return key, data


def split_pixel_url(url: str) -> tuple[str, str]:
    """:func:`split_value` of a pixel URL, without the backward search for most emails: the
    URLs of one content differ only in their token, after the same prefix, so when ``url``
    starts with the last prefix found, which ends in a character escaping changes, and the rest
    holds no such character and no space, that prefix is where :func:`split_value` cuts too."""
    prefix = LAST_PIXEL_PREFIX[0]
    if prefix and url.startswith(prefix) and SAFE_TAIL.fullmatch(url, len(prefix)):
        return prefix, url[len(prefix) :]
    prefix, tail = split_value(url)
    if prefix and UNSAFE_CHARACTER.fullmatch(prefix[-1]):
        LAST_PIXEL_PREFIX[0] = prefix
    return prefix, tail


def pixel_split_inserted(html: str, source_html: str, prefix: str, tail: str) -> bool:
    """Whether ``html`` is exactly ``insert_pixel(source_html, prefix + tail)`` for a pixel URL
    :func:`split_pixel_url` cut into ``prefix`` and ``tail``, found without building that text
    (an HTML-sized copy per email). The content's two halves around the pixel's place are cut
    once per content (:func:`pixel_halves`) and compared in place; so is the image: its escaped
    head once per prefix (:func:`escaped_image_head`), then the tail, which escaping leaves as
    it is (that is what makes it a tail), then the image's end. No text is built or escaped per
    email."""
    image_head = escaped_image_head(prefix)
    if len(html) != len(source_html) + len(image_head) + len(tail) + len(PIXEL_IMAGE_TAIL):
        return False
    head, rest = pixel_halves(source_html)
    token_at = len(head) + len(image_head)
    return (
        html.startswith(head)
        and html.startswith(image_head, len(head))
        and html.startswith(tail, token_at)
        and html.startswith(PIXEL_IMAGE_TAIL, token_at + len(tail))
        and html.endswith(rest)
    )


@lru_cache(maxsize=16)
def escaped_image_head(prefix: str) -> str:
    """The pixel image's text up to the URL's tail: :func:`pixel_image`'s head and ``prefix``
    escaped (``pixel_image(prefix + tail)`` is this, ``tail`` and the image's end)."""
    return PIXEL_IMAGE_HEAD + escape(prefix, quote=True)


def pixel_halves(source_html: str) -> tuple[str, str]:
    """``source_html`` cut where :func:`insert_pixel` puts the pixel (the tail is empty when it
    is appended); kept for up to 16 contents of at most ``MAX_KEPT_HALVES`` characters, whose
    emails share the very string object, so a lookup neither hashes nor compares the text."""
    if len(source_html) > MAX_KEPT_HALVES:
        return cut_at_pixel(source_html)
    return kept_pixel_halves(source_html)


def cut_at_pixel(source_html: str) -> tuple[str, str]:
    position = PIXEL_POSITIONS.position(source_html)
    if position is None:
        return source_html, ""
    return source_html[:position], source_html[position:]


kept_pixel_halves = lru_cache(maxsize=16)(cut_at_pixel)


def substitute(template: str, data: Mapping[str, str]) -> str:
    """SES's simple substitution of ``{{name}}`` by ``data[name]`` (the tails: no escaping
    changes them), as sesender expects SES to do it."""
    return SES_PLACEHOLDER.sub(lambda match: data.get(match.group(1), match.group(0)), template)


def fill_prefixes(
    subject: str, html: str, values: Mapping[str, str], data: dict[str, str]
) -> tuple[str, str] | None:
    """Write each placeholder's prefix into ``subject`` and ``html`` (escaped in the HTML) and
    its tail into ``data``; None when a placeholder has no value or sits where SES could read
    it differently from sesender (see the module docstring)."""

    def placeholder(match: re.Match[str], *, in_html: bool) -> str:
        name = match.group(1)
        value = values.get(name)
        if value is None:
            raise LookupError(name)
        prefix, tail = split_value(value)
        if "{" in prefix or "}" in prefix:
            raise LookupError(name)  # SES would read braces written into the template
        if tail:
            data[name] = tail
            return (escape(prefix) if in_html else prefix) + "{{" + name + "}}"
        return escape(prefix) if in_html else prefix

    try:
        filled_subject = PLACEHOLDER.sub(lambda m: placeholder(m, in_html=False), subject)
        filled_html = PLACEHOLDER.sub(lambda m: placeholder(m, in_html=True), html)
    except LookupError:
        return None
    if not placeholders_are_plain(filled_subject) or not placeholders_are_plain(
        filled_html, is_html=True
    ):
        return None
    return filled_subject, filled_html


def placeholders_are_plain(template: str, *, is_html: bool = False) -> bool:
    """Whether every placeholder of ``template`` stands where SES substitutes exactly what
    sesender renders, and no other braces are left for SES to read."""
    if BRACES.search(PLACEHOLDER.sub(" ", template)):
        return False
    for match in PLACEHOLDER.finditer(template):
        start, end = match.span()
        before = template[:start]
        if before.endswith(("{", "\\")) or template[end : end + 1] == "}":
            return False
        if not is_html:
            continue
        if CHARACTER_REFERENCE_START.search(before):
            return False
        tag_start = before.rfind("<")
        if tag_start > before.rfind(">"):
            if not attribute_is_plain(template, tag_start, start):
                return False
            continue
        opened = [m.start() for m in LINK_OPEN.finditer(before)]
        closed = [m.start() for m in LINK_CLOSE.finditer(before)]
        if opened and (not closed or closed[-1] < opened[-1]):
            return False  # in a link's text
    return True


def attribute_is_plain(html: str, tag_start: int, position: int) -> bool:
    """Whether the placeholder at ``position``, inside the tag starting at ``tag_start``, sits
    inside a quoted attribute value after some literal text (a value cannot then end the
    attribute, or make the link's target start with ``#``); in a link, also whether the text
    part still adds the target to the link's text exactly when the rendered one would."""
    if not QUOTED_VALUE_BEFORE.search(html, tag_start, position):
        return False
    if not LINK_OPEN.match(html, tag_start):
        return True
    tag_end = html.find(">", position)
    close = LINK_CLOSE.search(html, tag_end + 1) if tag_end >= 0 else None
    href = HREF.search(html, tag_start, tag_end) if tag_end >= 0 else None
    if close is None or href is None:
        return False
    href_value = href.group(1) if href.group(1) is not None else href.group(2)
    inner = html[tag_end + 1 : close.start()]
    if "<" in inner:
        return False
    text = WHITESPACE.sub(" ", unescape(inner)).strip()
    target = "".join(
        ".+" if index % 2 else re.escape(unescape(part))
        for index, part in enumerate(PLACEHOLDER.split(href_value))
    )
    return not (re.fullmatch(target, text) or re.fullmatch(target, "mailto:" + text))


@lru_cache(maxsize=16)
def bulk_template(key: BulkKey) -> BulkTemplate | None:
    """The inline template of ``key``'s emails, once per content; None when its text part
    would hold braces SES could read (the content is then sent email by email).

    The text is converted with each placeholder stood in for by a marker no HTML can hold, so
    braces that only appear in the text (``&#123;&#123;``) are told apart from placeholders.
    """
    if SENTINEL_OPEN in key.html or SENTINEL_CLOSE in key.html:
        return None
    marked = PLACEHOLDER.sub(lambda m: SENTINEL_OPEN + m.group(1) + SENTINEL_CLOSE, key.html)
    text = html_to_text(marked)
    if BRACES.search(text):
        return None
    text = text.replace(SENTINEL_OPEN, "{{").replace(SENTINEL_CLOSE, "}}")
    html = key.html
    if key.pixel_url is not None:
        # ``insert_pixel`` escapes the URL; the placeholder's characters need no escaping.
        html = insert_pixel(html, key.pixel_url)
    return BulkTemplate(subject=key.subject, html=html, text=text)


def chunk_sizes(count: int) -> Iterator[int]:
    """Split ``count`` emails into as few calls of at most 50 as possible, of near-equal size
    (so that 51 emails are 26 + 25, never 50 + a lone one)."""
    calls = -(-count // MAX_BULK_ENTRIES)
    for index in range(calls):
        yield count // calls + (1 if index < count % calls else 0)


class BulkEntryParts(Protocol):
    """What :func:`build_bulk_request` reads of each email (an ``OutgoingEmail``, or the
    per-recipient tuple the SES client process gets, ``ses_bulk_call.BulkRecipient``)."""

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
    @property
    def tags(self) -> tuple[tuple[str, str], ...]: ...


def build_bulk_request(
    key: BulkKey,
    template: BulkTemplate,
    emails: Sequence[BulkEntryParts],
    data: Sequence[Mapping[str, str]],
    addresses: Sequence[tuple[str, str]] | None = None,
) -> SendBulkEmailRequestTypeDef:
    """Build the ``send_bulk_email`` keyword arguments for ``emails`` (all of ``key``), with
    ``data[i]`` as the replacement data of ``emails[i]``.

    ``addresses`` are the emails' (sender, recipient) as
    :func:`~sesender.backends.sendable.check_sendable` returned them, when the caller has
    checked them already; otherwise they are checked here, and :class:`PermanentSendError` is
    raised for the first that SES would refuse.
    """
    if addresses is None:
        addresses = [check_sendable(email) for email in emails]
    # One sender per key: every email's checked sender is the same address.
    sender = addresses[0][0] if addresses else ""
    entries: list[BulkEmailEntryTypeDef] = []
    for email, values, (_, recipient) in zip(emails, data, addresses, strict=True):
        entry: BulkEmailEntryTypeDef = {
            "Destination": {"ToAddresses": [recipient]},
            "ReplacementEmailContent": {
                "ReplacementTemplate": {"ReplacementTemplateData": compact_json(values)}
            },
        }
        if email.headers:
            entry["ReplacementHeaders"] = [
                {"Name": name, "Value": value} for name, value in email.headers
            ]
        tags: list[MessageTagTypeDef] = ses_tags(email.tags)
        if tags:
            entry["ReplacementTags"] = tags
        entries.append(entry)
    content: EmailTemplateContentTypeDef = {"Subject": template.subject, "Html": template.html}
    if template.text:
        # Left out when the HTML has no text at all, as in SendEmail.
        content["Text"] = template.text
    request: SendBulkEmailRequestTypeDef = {
        "FromEmailAddress": sender,
        "DefaultContent": {"Template": {"TemplateContent": content, "TemplateData": "{}"}},
        "BulkEmailEntries": entries,
    }
    if key.reply_to is not None:
        request["ReplyToAddresses"] = [ascii_address(key.reply_to, field="reply-to")]
    if key.configuration_set:
        request["ConfigurationSetName"] = key.configuration_set
    return request


def entry_result(
    result: BulkEmailEntryResultTypeDef, *, sender: str | None = None
) -> str | SendError:
    """Map one entry of a ``SendBulkEmail`` answer to that email's result (pure); ``sender``:
    the call's sender, to tell an unverified sender from an unverified sandbox recipient."""
    status = str(result.get("Status", ""))
    message_id = result.get("MessageId")
    if status == "SUCCESS" and message_id:
        return message_id
    error = str(result.get("Error", ""))
    text = f"SES {status or 'no status'}: {error}".rstrip(": ")
    if status in SENDER_STATUSES or (
        status == "MESSAGE_REJECTED"
        and sender is not None
        and "not verified" in error.lower()
        and bare_address(sender) in error.lower()
    ):
        return SenderSendError(text, code=status)
    if status in PERMANENT_STATUSES:
        return PermanentSendError(text, code=status)
    if status in ACCOUNT_STATUSES:
        return AccountSendError(text, code=status)
    return TransientSendError(text, code=status, throttled=status in THROTTLED_STATUSES)
