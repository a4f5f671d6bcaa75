"""The open-tracking pixel: where it goes in an email's HTML, and the image itself.

A module of its own, importing nothing of sesender's: the composer puts the pixel in, and the SES
backend's bulk path puts it into a template and checks an email's pixel is the one composed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape

_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


#: Contents whose pixel position is remembered. Recipients of one content arrive together (a
#: claimed batch shares one ``Content``), so a handful covers every content being sent; a rendered
#: template is new text for each recipient and only passes through.
PIXEL_POSITION_CACHE_SIZE = 16


def find_pixel_position(html: str) -> int | None:
    """Where the pixel goes: the start of the last ``</body>``, or None (then it is appended)."""
    position = None
    for match in _BODY_CLOSE.finditer(html):
        position = match.start()
    return position


#: The search scans the whole HTML (a 10 KB newsletter: most of composing an email), while the
#: same content goes to thousands of recipients: look it up once per content. A hit on the very
#: string object a claimed batch shares neither hashes nor compares the text again.
cached_pixel_position = lru_cache(maxsize=PIXEL_POSITION_CACHE_SIZE)(find_pixel_position)


def pixel_image(pixel_url: str) -> str:
    """The 1x1 tracking image for ``pixel_url``."""
    return (
        f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:none;border:0" />'
    )


def insert_pixel(html: str, pixel_url: str) -> str:
    """Insert the 1x1 tracking image before the last ``</body>``, or append it."""
    position = cached_pixel_position(html)
    if position is None:
        return html + pixel_image(pixel_url)
    return html[:position] + pixel_image(pixel_url) + html[position:]
