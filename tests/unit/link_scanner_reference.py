"""The link scanner and rewriter sesender used before the one-pass scanner of sesender.links:
kept as the reference the differential tests compare the fast code with (tests/unit/test_links.py).
Slow but simple: it walks the HTML tag by tag."""

from __future__ import annotations

import re
from html import escape, unescape

from sesender.links import (
    BODY_CLOSE,
    CLICK_FIELD,
    CLICK_PATH,
    HTTP_URL,
    PLACEHOLDER,
    URL_NEWLINES,
    Link,
)
from sesender.tracking import TokenSigner

# The start of an <a> tag; the tag ends at the next ">" (see find_links).
ANCHOR_START = re.compile(r"<a[\s/>]", re.IGNORECASE)
# An href attribute preceded by white space, its value in group 1 (see find_links for when it is
# taken as it is).
HREF = re.compile(r"""\shref\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+)""", re.IGNORECASE)
HREF_VALUE = re.compile(r"""("[^"]*"|'[^']*'|[^\s"'=<>`]+)""")
ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""",
)


def reference_find_links(html: str, *, own_url: str = "") -> list[Link]:
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
            href = reference_tag_href(html, tag_start, end)
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


def reference_tag_href(html: str, start: int, end: int) -> re.Match[str] | None:
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


def reference_track_links(
    html: str, *, public_url: str, signer: TokenSigner
) -> tuple[tuple[str, ...], tuple[bool, ...], tuple[str, ...], str]:
    """The old rewrite as (pieces, slots, urls, template): NUL marks, one split."""
    links = reference_find_links(html, own_url=public_url) if "\x00" not in html else []
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
    return (
        (first, *(piece[1:] if piece[:1] == "p" else piece for piece in rest)),
        tuple(piece[:1] != "p" for piece in rest),
        tuple(link.url for link in links),
        rewritten.replace("\x00", "{{" + CLICK_FIELD + "}}"),
    )
