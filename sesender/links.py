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
  order: the two never disagree because they are one function.
- **Once per content**: :class:`TrackedHtml` is the content with each tracked ``href`` replaced by
  ``{public_url}/v1/events/click/<recipient token>/<link code>``, kept as the pieces between the
  places where the recipient's token (and the open pixel) go. An email's HTML is then one
  ``str.join`` of the pieces with its token; for SES bulk calls the template is the same pieces
  joined with ``{{sesender_click_token}}``, and each entry's replacement data carries its token.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
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

# The start of an <a> tag; the tag ends at the next ">" (see find_links).
ANCHOR_START = re.compile(r"<a[\s/>]", re.IGNORECASE)
# An href attribute preceded by white space, its value in group 1 (see find_links for when it is
# taken as it is).
HREF = re.compile(r"""\shref\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+)""", re.IGNORECASE)
HREF_VALUE = re.compile(r"""("[^"]*"|'[^']*'|[^\s"'=<>`]+)""")
ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""",
)
PLACEHOLDER = re.compile(r"\{\{[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\}\}")
# An http(s) URL with something after the scheme and no control character anywhere.
HTTP_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*\Z", re.IGNORECASE)
URL_NEWLINES = re.compile(r"[\t\n\r]")
BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
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
    links: list[Link] = []
    own = own_url.rstrip("/").lower()
    position = 0
    # Linear in the HTML whatever it holds: a tag ends at the first ">" after "<a" (a ">" inside
    # a quoted attribute value ends it early, and an href after that is not seen: that link is
    # simply not tracked), and the search goes on after it.
    while (start := ANCHOR_START.search(html, position)) is not None:
        end = html.find(">", start.start() + 2)
        if end < 0:
            break
        position = end + 1
        tag_start = start.start() + 2
        href = HREF.search(html, tag_start, end)
        if href is None:
            continue
        before = html[tag_start : href.start()]
        if '"' in before or "'" in before or "no-track" in html[tag_start:end].lower():
            # Not the usual <a href=...> with nothing quoted before it: read every attribute.
            href = tag_href(html, tag_start, end)
            if href is None:
                continue
        raw = href.group(1)
        value = raw[1:-1] if raw[0] in "'\"" else raw
        if "{{" in value and PLACEHOLDER.search(value):
            continue
        # As a browser does: entities decoded, outer white space dropped, tabs and line breaks
        # inside removed (the URL standard); any other control character: not a link to track.
        if "&" in value:
            # "&amp;" alone (query strings) is the common case, and much cheaper to decode.
            url = value.replace("&amp;", "&")
            if "&" in value.replace("&amp;", ""):
                url = unescape(value)
        else:
            url = value
        url = url.strip()
        if "\t" in url or "\n" in url or "\r" in url:
            url = URL_NEWLINES.sub("", url)
        if HTTP_URL.match(url) is None:
            continue
        if own and url[: len(own)].lower() == own and url[len(own) : len(own) + 1] in ("", "/"):
            continue
        links.append(Link(len(links), url, href.start(1), href.end(1)))
    return links


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
    return tuple(link.url for link in find_links(html, own_url=own_url))


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

    The rewritten HTML is built once with a NUL where each token goes (no stored content holds
    a NUL: submission refuses it; HTML that does is left untracked), the pixel's place is marked
    where :func:`sesender.pipeline.pixel.insert_pixel` would put it in the rendered HTML, and
    one ``split`` gives the pieces.
    """
    links = find_links(html, own_url=public_url) if "\x00" not in html else []
    head = '"' + escape(public_url.rstrip("/") + CLICK_PATH, quote=True) + "\x00/"
    parts: list[str] = []
    cursor = 0
    for link, code in zip(links, signer.link_codes([link.url for link in links]), strict=True):
        parts += (html[cursor : link.start], head, code, '"')
        cursor = link.end
    parts.append(html[cursor:])
    rewritten = "".join(parts)
    body_close = None
    for match in BODY_CLOSE.finditer(rewritten):
        body_close = match.start()
    if body_close is None:
        marked = rewritten + "\x00p"
    else:
        marked = rewritten[:body_close] + "\x00p" + rewritten[body_close:]
    first, *rest = marked.split("\x00")
    return TrackedHtml(
        pieces=(first, *(piece[1:] if piece[:1] == "p" else piece for piece in rest)),
        slots=tuple(piece[:1] != "p" for piece in rest),
        urls=tuple(link.url for link in links),
        template=rewritten.replace("\x00", "{{" + CLICK_FIELD + "}}"),
    )


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
