"""Click tracking's links: which links of a content are tracked, and the content rewritten.

Pure functions and values, no I/O, importing nothing of sesender's but the token signer, so the
submission parser, the composer and the SES backend's bulk path can all use them
(docs/architecture.md, "Click tracking").

- **Which links**: every ``<a>`` whose ``href`` is an ``http``/``https`` URL, except a link with
  a ``data-no-track`` attribute, a link whose ``href`` holds a merge placeholder (``{{ name }}``:
  it differs per recipient; ``{{unsubscribe_url}}`` is one) and a link to this service itself
  (its unsubscribe page, an already tracked link). ``mailto:``, ``tel:``, ``#anchors`` and
  relative links are left alone.
- **Positions**: tracked links are numbered 0, 1, ... in document order. The submission stores
  each position's URL for the content (HTML entities decoded, as a browser would follow it), and
  the composer, running :func:`find_links` on the same text, rewrites the same links in the same
  order: the two never disagree because they are one function (:func:`scan_links`).
- **Once per content**: :class:`TrackedHtml` is the content with each tracked ``href`` replaced by
  ``{public_url}/v1/events/click/<recipient token>/<link code>``, kept as the pieces between the
  places where the recipient's token (and the open pixel) go. An email's HTML is then one
  ``str.join`` of the pieces with its token; for SES bulk calls the template is the same pieces
  joined with ``{{sesender_click_token}}``, and each entry's replacement data carries its token.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape, unescape
from typing import NamedTuple

from sesender.tracking import TokenSigner

__all__ = [
    "CLICK_FIELD",
    "CLICK_PATH",
    "Link",
    "LinkRewriter",
    "TrackedHtml",
    "find_links",
    "link_urls",
]

#: The template field that holds an email's click token in an SES bulk template.
CLICK_FIELD = "sesender_click_token"
#: The path of tracked links on this service (the route is ``/v1/events/click/<token>/<code>``).
CLICK_PATH = "/v1/events/click/"

#: The value of an ``href``: quoted (a tag ends at its first ">", so a quoted value holds none) or
#: bare, as HTML allows.
HREF_VALUE_PATTERN = r"""("[^">]*"|'[^'>]*'|[^\s"'=<>`]+)"""
#: An http(s) URL that a browser follows exactly as written but for ``&amp;``: no other
#: character reference, no white space or control character, no quote, no ``{`` (so no merge
#: placeholder). Nearly every link of a real newsletter is one; the scanning regex tells their
#: quoted values apart itself, which saves the per-link checks in Python.
PLAIN_URL_CHARACTER = r"""[^\s"'<>&{\x00-\x1f\x7f]"""
# (Unrolled as "x+(&amp;x*)*": a repeated alternation would run the engine's slow group loop
# once per character.)
PLAIN_URL_PATTERN = rf"((?i:https?://){PLAIN_URL_CHARACTER}+(?:&amp;{PLAIN_URL_CHARACTER}*)*)"
#: One ``<a>`` tag that has an ``href`` attribute; the tag ends at its first ">". Group 1 is what
#: comes before the first ``href=`` (white space first); the value is in group 2 (a plain URL in
#: double quotes), 3 (in single quotes) or 4 (anything else, quotes included). The "a" is
#: matched in lower case only: a literal prefix lets the regex engine skip to each "<a" at C
#: speed, where a case-insensitive one costs twice the scan; a document with "<A" takes
#: :data:`ANCHOR_WITH_HREF_ANY_CASE` instead.
ANCHOR_WITH_HREF = re.compile(
    r"<a(?=[\s/>])([^>]*?)\s(?i:href)\s*=\s*"
    + f"""(?:"{PLAIN_URL_PATTERN}"|'{PLAIN_URL_PATTERN}'|{HREF_VALUE_PATTERN})"""
    + r"[^>]*>"
)
ANCHOR_WITH_HREF_ANY_CASE = re.compile(ANCHOR_WITH_HREF.pattern, re.IGNORECASE)
UPPER_ANCHOR = re.compile("<A")
HREF_VALUE = re.compile(HREF_VALUE_PATTERN)
ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""",
)
PLACEHOLDER = re.compile(r"\{\{[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\}\}")
# An http(s) URL with something after the scheme and no control character anywhere.
HTTP_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*\Z", re.IGNORECASE)
URL_NEWLINES = re.compile(r"[\t\n\r]")
BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
BODY_CLOSE_START = re.compile("</body", re.IGNORECASE)
#: How much of the end of a document is searched first for its last ``</body>``.
BODY_CLOSE_TAIL = 4096
# Stands in for the recipient's token while the text part is made once per content.
TEXT_MARK = "\ue010click\ue011"


class Link(NamedTuple):
    """A tracked link: its position, its URL as a browser follows it, and where its ``href``
    value (quotes included) is in the HTML."""

    position: int
    url: str
    start: int
    end: int


def find_links(html: str, *, own_url: str = "") -> list[Link]:
    """The tracked links of ``html`` in document order (see the module docstring).

    ``own_url`` is this service's public URL: links to it are not tracked.
    """
    urls, starts, ends = scan_links(html, own_url)
    return [
        Link(position, url, start, end)
        for position, (url, start, end) in enumerate(zip(urls, starts, ends, strict=True))
    ]


def scan_links(html: str, own_url: str) -> tuple[list[str], list[int], list[int]]:
    """:func:`find_links` as three lists: the URLs, and where each ``href`` value starts and ends.

    One regex pass finds every ``<a>`` tag with an ``href`` and its value (linear in the HTML
    whatever it holds: a tag ends at the first ">" after "<a", even inside a quoted value, and an
    href after that is not seen: that link is simply not tracked). Only a tag with a quote before
    its first ``href=`` (which may then be inside another attribute's value) or with
    ``no-track`` in it is read attribute by attribute (:func:`tag_href`), and only a value that
    is not a quoted plain URL (:data:`PLAIN_URL_PATTERN`) goes through :func:`href_url`: the
    work per link is most of what rewriting a newsletter costs (docs/performance.md).
    """
    urls: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    own = own_url.rstrip("/").lower()
    own_length = len(own)
    anchors = ANCHOR_WITH_HREF_ANY_CASE if UPPER_ANCHOR.search(html) else ANCHOR_WITH_HREF
    url: str | None
    for anchor in anchors.finditer(html):
        before, double_quoted, single_quoted = anchor.group(1, 2, 3)
        if '"' in before or "'" in before or "no-track" in anchor.group(0).lower():
            # Not the usual <a href=...> with nothing quoted before it: read every attribute.
            href = tag_href(html, anchor.start() + 2, anchor.end() - 1)
            if href is None:
                continue
            start, end = href.span(1)
            url = href_url(href.group(1))
        elif double_quoted is not None or single_quoted is not None:
            group = 2 if double_quoted is not None else 3
            url = anchor.group(group)
            if "&" in url:
                url = url.replace("&amp;", "&")
            start, end = anchor.start(group) - 1, anchor.end(group) + 1
        else:
            start, end = anchor.span(4)
            url = href_url(anchor.group(4))
        if url is None:
            continue
        if (
            own
            and url[own_length : own_length + 1] in ("", "/")
            and url[:own_length].lower() == own
        ):
            continue
        urls.append(url)
        starts.append(start)
        ends.append(end)
    return urls, starts, ends


def href_url(raw: str) -> str | None:
    """The URL a browser follows for the ``href`` value ``raw`` (quotes included), if it is one
    to track: None for a merge placeholder, a scheme other than http(s), a control character."""
    value = raw[1:-1] if raw[0] in "'\"" else raw
    if "{{" in value and PLACEHOLDER.search(value):
        return None
    # As a browser does: entities decoded, outer white space dropped, tabs and line breaks
    # inside removed (the URL standard); any other control character: not a link to track.
    url = unescape(value) if "&" in value else value
    url = url.strip()
    if "\t" in url or "\n" in url or "\r" in url:
        url = URL_NEWLINES.sub("", url)
    return url if HTTP_URL.match(url) is not None else None


def tag_href(html: str, start: int, end: int) -> re.Match[str] | None:
    """The first ``href`` attribute of the tag between ``start`` and ``end`` (its value is group
    1), read attribute by attribute; None when it has none or has ``data-no-track``."""
    href = None
    for attribute in ATTRIBUTE.finditer(html, start, end):
        name = attribute.group(1).lower()
        if name == "data-no-track":
            return None
        if name == "href" and href is None and attribute.group(2) is not None:
            href = attribute
    return None if href is None else HREF_VALUE.match(html, href.start(2), href.end(2))


def link_urls(html: str, *, own_url: str = "") -> tuple[str, ...]:
    """The URLs of the tracked links of ``html``, by position (what the submission stores)."""
    return tuple(scan_links(html, own_url)[0])


@dataclass(frozen=True, slots=True)
class TrackedHtml:
    """A content with its tracked links rewritten, made once per content.

    ``pieces`` are the HTML between the places where something per recipient goes; ``slots``
    says, for each place, whether it takes the recipient's click token (True) or the open pixel
    (False: exactly one such place, before the last ``</body>``, or at the end, where
    :func:`sesender.pipeline.pixel.insert_pixel` would put it). ``urls`` are the tracked links'
    URLs by position.
    """

    pieces: tuple[str, ...]
    slots: tuple[bool, ...]
    urls: tuple[str, ...]
    #: The HTML with ``{{sesender_click_token}}`` where each token goes and nothing where the
    #: pixel goes: the SES bulk template (which inserts the pixel itself).
    template: str
    _text: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def render(self, token: str, pixel: str = "") -> str:
        """This content's HTML for the recipient of ``token``, with ``pixel`` (an ``<img>``)."""
        out = [""] * (2 * len(self.pieces) - 1)
        out[0::2] = self.pieces
        out[1::2] = [token if is_token else pixel for is_token in self.slots]
        return "".join(out)

    def text(self, token: str, convert: Callable[[str], str]) -> str:
        """The text part for the recipient of ``token``: ``convert`` (HTML to text) runs once per
        content, with a mark where the token goes, which is then replaced per recipient."""
        text = self._text.get("text")
        if text is None:
            marked = self.render(TEXT_MARK)
            if marked.count(TEXT_MARK) != len(self.urls):
                return convert(self.render(token))  # the content holds the mark itself
            text = convert(marked)
            self._text["text"] = text
        return text.replace(TEXT_MARK, token)


def track_links(html: str, *, public_url: str, signer: TokenSigner) -> TrackedHtml:
    """Rewrite every tracked link of ``html`` (once per content; see the module docstring).

    The pieces are cut straight from ``html`` around each link's ``href`` value and the pixel's
    place (where :func:`sesender.pipeline.pixel.insert_pixel` would put it in the rendered HTML:
    before the last ``</body>`` that is not inside a rewritten ``href``, else at the end), and the
    codes of all the links are signed in one call: no intermediate copy of the document is made.
    """
    urls, starts, ends = scan_links(html, public_url)
    pixel_at = last_body_close(html, starts, ends)
    head = '"' + escape(public_url.rstrip("/") + CLICK_PATH, quote=True)
    pieces: list[str] = []
    slots: list[bool] = []
    lead = ""  # what the next piece starts with: the end of the previous rewritten href
    cursor = 0
    for start, end, code in zip(starts, ends, signer.link_codes(urls), strict=True):
        if cursor <= pixel_at < start:
            pieces.append(lead + html[cursor:pixel_at])
            slots.append(False)
            lead, cursor = "", pixel_at
        pieces.append(lead + html[cursor:start] + head)
        slots.append(True)
        lead = "/" + code + '"'
        cursor = end
    if cursor <= pixel_at:
        pieces.append(lead + html[cursor:pixel_at])
        slots.append(False)
        lead, cursor = "", pixel_at
    pieces.append(lead + html[cursor:])
    field_mark = "{{" + CLICK_FIELD + "}}"
    return TrackedHtml(
        pieces=tuple(pieces),
        slots=tuple(slots),
        urls=tuple(urls),
        template="".join(
            piece + (field_mark if is_token else "")
            for piece, is_token in zip(pieces, (*slots, False), strict=True)
        ),
    )


def last_body_close(html: str, starts: Sequence[int], ends: Sequence[int]) -> int:
    """Where the pixel goes in ``html`` once the links whose ``href`` values lie between
    ``starts`` and ``ends`` are rewritten: the start of its last ``</body>`` outside those values
    (rewriting replaces them), or its end.

    The last 4 KB are searched first, then a region twice as long before them, and so on: a
    ``</body>`` is nearly always near the end, so this reads a few kilobytes, not the document.
    """
    region_end = len(html)
    size = BODY_CLOSE_TAIL
    while region_end > 0:
        begin = max(0, region_end - size)
        # "</body" starting in [begin, region_end): the later ones were looked at already.
        found = BODY_CLOSE_START.finditer(html, begin, region_end + len("</body") - 1)
        for position in reversed([match.start() for match in found]):
            index = bisect_right(starts, position) - 1
            inside_link = index >= 0 and position < ends[index]
            if not inside_link and BODY_CLOSE.match(html, position):
                return position
        region_end = begin
        size *= 2
    return len(html)


class LinkRewriter:
    """:func:`track_links` with a small cache, so a content is rewritten once however many of
    its emails are composed (the emails of one claimed batch share the very same string, so a
    lookup is a dictionary hit that neither hashes nor compares the text again). Bounded like
    :class:`sesender.pipeline.pixel.PixelPositions`; safe from any thread."""

    def __init__(
        self,
        *,
        public_url: str,
        signer: TokenSigner,
        max_entries: int = 16,
        max_characters: int = 4_000_000,
    ) -> None:
        self.public_url = public_url
        self.signer = signer
        self.max_entries = max_entries
        self.max_characters = max_characters
        self._tracked: dict[str, TrackedHtml] = {}
        self._characters = 0
        self._lock = threading.Lock()

    def tracked(self, html: str) -> TrackedHtml:
        with self._lock:
            found = self._tracked.get(html)
        if found is not None:
            return found
        tracked = track_links(html, public_url=self.public_url, signer=self.signer)
        if len(html) <= self.max_characters:
            with self._lock:
                while self._tracked and (
                    len(self._tracked) >= self.max_entries
                    or self._characters + len(html) > self.max_characters
                ):
                    oldest = next(iter(self._tracked))
                    del self._tracked[oldest]
                    self._characters -= len(oldest)
                if html not in self._tracked:
                    self._tracked[html] = tracked
                    self._characters += len(html)
        return tracked
