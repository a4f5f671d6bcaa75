"""The open-tracking pixel: where it goes in an email's HTML, and the image itself.

The composer puts the pixel in; the SES backend's bulk path puts it into a template and checks
that an email's pixel is the one composed. A module of its own that imports nothing of
sesender's, so the backend can use it without importing the composer, which imports the backends
(that cycle broke ``import sesender.pipeline.compose`` when it came first).
"""

from __future__ import annotations

import re
import threading
from html import escape

_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def find_pixel_position(html: str) -> int | None:
    """Where the pixel goes: the start of the last ``</body>``, or None (then it is appended)."""
    position = None
    for match in _BODY_CLOSE.finditer(html):
        position = match.start()
    return position


class PixelPositions:
    """The pixel's position in recently seen HTML, so it is searched once per content.

    The search scans the whole HTML (for a 16 KB newsletter, half the CPU of composing an email)
    while one content goes to thousands of recipients, and the emails of one claimed batch share
    one ``Content``: after the first email a lookup is a dictionary hit on the very same string
    object, which neither hashes nor compares the text again. The cache keeps the HTML it is
    keyed by alive, so it is bounded twice: at most ``max_entries`` contents and
    ``max_characters`` characters in all (oldest first out); HTML longer than that is searched
    every time, as before there was a cache. A lock keeps its updates safe from any thread.
    """

    def __init__(self, *, max_entries: int, max_characters: int) -> None:
        self.max_entries = max_entries
        self.max_characters = max_characters
        self._positions: dict[str, int | None] = {}
        self._characters = 0
        self._lock = threading.Lock()

    def position(self, html: str) -> int | None:
        # Read without the lock: one dictionary lookup is atomic, and an entry evicted at that
        # moment is only a miss (the position is searched again). Taking the lock for every
        # email cost as much as the lookup itself.
        try:
            return self._positions[html]
        except KeyError:
            pass
        position = find_pixel_position(html)
        if len(html) <= self.max_characters:
            with self._lock:
                self._remember(html, position)
        return position

    def _remember(self, html: str, position: int | None) -> None:
        if html in self._positions:
            return
        while self._positions and (
            len(self._positions) >= self.max_entries
            or self._characters + len(html) > self.max_characters
        ):
            oldest = next(iter(self._positions))
            del self._positions[oldest]
            self._characters -= len(oldest)
        self._positions[html] = position
        self._characters += len(html)

    def clear(self) -> None:
        with self._lock:
            self._positions.clear()
            self._characters = 0

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def characters(self) -> int:
        return self._characters


#: The process's cache: a handful of contents are being sent at any one time. A rendered
#: template is new text for each recipient: it is searched without the cache (``cached=False``),
#: so a templated campaign neither hashes every email's HTML nor evicts the shared contents.
PIXEL_POSITIONS = PixelPositions(max_entries=16, max_characters=2_000_000)


#: The image around its (escaped) URL: the composer signs a token per email and puts it between a
#: head escaped once per composer and this tail, instead of escaping every email's whole URL.
PIXEL_IMAGE_HEAD = '<img src="'
PIXEL_IMAGE_TAIL = '" width="1" height="1" alt="" style="display:none;border:0" />'


def pixel_image(pixel_url: str) -> str:
    """The 1x1 tracking image for ``pixel_url``."""
    return PIXEL_IMAGE_HEAD + escape(pixel_url, quote=True) + PIXEL_IMAGE_TAIL


def insert_image(html: str, image: str, *, cached: bool = True) -> str:
    """Insert ``image`` (a :func:`pixel_image`) before the last ``</body>``, or append it.

    ``cached``: the HTML is a content shared by many emails, so its pixel position is kept;
    False for HTML seen once (a rendered template).
    """
    position = PIXEL_POSITIONS.position(html) if cached else find_pixel_position(html)
    if position is None:
        return html + image
    return html[:position] + image + html[position:]


def insert_pixel(html: str, pixel_url: str, *, cached: bool = True) -> str:
    """Insert the 1x1 tracking image for ``pixel_url`` before the last ``</body>``, or append
    it (``cached`` as for :func:`insert_image`)."""
    return insert_image(html, pixel_image(pixel_url), cached=cached)
