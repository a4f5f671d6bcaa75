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

# An opening <a> tag. Attribute values may hold ">" only inside quotes, which the attribute
# pattern below reads properly; the tag pattern allows quoted runs for that reason.
ANCHOR = re.compile(r"""<a(?=[\s/>])(?:[^>"']|"[^"]*"|'[^']*')*>""", re.IGNORECASE)
ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""",
)
PLACEHOLDER = re.compile(r"\{\{[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\}\}")
HTTP_URL = re.compile(r"https?://[^\s]", re.IGNORECASE)
URL_NEWLINES = re.compile(r"[\t\n\r]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
# Stands in for the recipient's token while the text part is made once per content.
TEXT_MARK = "\ue010click\ue011"


@dataclass(frozen=True, slots=True)
class Link:
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
    for tag in ANCHOR.finditer(html):
        href: tuple[str, int, int] | None = None
        no_track = False
        # Attributes start after "<a"; the closing ">" is excluded.
        for attribute in ATTRIBUTE.finditer(html, tag.start() + 2, tag.end() - 1):
            name = attribute.group(1).lower()
            if name == "data-no-track":
                no_track = True
            elif name == "href" and href is None and attribute.group(2) is not None:
                href = (attribute.group(2), attribute.start(2), attribute.end(2))
        if href is None or no_track:
            continue
        raw, start, end = href
        value = raw[1:-1] if raw[:1] in ("'", '"') else raw
        if PLACEHOLDER.search(value):
            continue
        # As a browser does: entities decoded, outer white space dropped, tabs and line breaks
        # inside removed (the URL standard); any other control character: not a link to track.
        url = URL_NEWLINES.sub("", unescape(value).strip())
        if not HTTP_URL.match(url) or CONTROL.search(url):
            continue
        lowered = url.lower()
        if own and (lowered == own or lowered.startswith(own + "/")):
            continue
        links.append(Link(position=len(links), url=url, start=start, end=end))
    return links


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
    """Rewrite every tracked link of ``html`` (once per content; see the module docstring)."""
    links = find_links(html, own_url=public_url)
    prefix = escape(public_url.rstrip("/") + CLICK_PATH, quote=True)
    pieces: list[str] = []
    slots: list[bool] = []
    # Where the pixel goes, in the rewritten HTML: the last </body> outside every href value
    # (the values are replaced, so one inside a value does not count).
    body_close = None
    for match in BODY_CLOSE.finditer(html):
        if not any(link.start <= match.start() < link.end for link in links):
            body_close = match.start()
    cursor = 0
    current: list[str] = []
    pixel_placed = False
    for link in links:
        if not pixel_placed and body_close is not None and body_close < link.start:
            current.append(html[cursor:body_close])
            pieces.append("".join(current))
            slots.append(False)
            current, cursor, pixel_placed = [], body_close, True
        current.append(html[cursor : link.start])
        current.append('"' + prefix)
        pieces.append("".join(current))
        slots.append(True)
        current = ["/" + signer.link_code(link.position, link.url) + '"']
        cursor = link.end
    if not pixel_placed and body_close is not None:
        current.append(html[cursor:body_close])
        pieces.append("".join(current))
        slots.append(False)
        current, cursor = [], body_close
        pixel_placed = True
    current.append(html[cursor:])
    if not pixel_placed:
        pieces.append("".join(current))
        slots.append(False)
        current = []
    pieces.append("".join(current))
    placeholder = "{{" + CLICK_FIELD + "}}"
    template = "".join(
        piece + (placeholder if index < len(slots) and slots[index] else "")
        for index, piece in enumerate(pieces)
    )
    return TrackedHtml(
        pieces=tuple(pieces),
        slots=tuple(slots),
        urls=tuple(link.url for link in links),
        template=template,
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
