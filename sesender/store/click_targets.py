"""The click redirect's targets in memory: which links the emails of a recent submission have.

A click on a tracked link needs the URL at a position of the email's content. That is a fact
fixed at submission (an email's content and its ``track_clicks`` choice never change, a content's
links are a function of its text, and retention keeps them), so the store that stored the
emails remembers it here, per message, as a range of consecutive request ids and the links of
their content: the redirect then answers without a database read, which on the click route cost
a worker-thread round trip per click, as much CPU as the rest of the route (docs/performance.md,
"Click tracking").

What is not here (emails submitted before this process started, by another instance, or
forgotten because the bound was reached) is read from the database as before: this is a cache,
never the truth. A range is only remembered when the store saw its ids were consecutive, and an
email pruned since still has its links (a click on it redirects and records nothing, as from the
database). Used from the event loop only (the store's async methods), so it takes no lock.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable

from sesender.models import ClickRange

__all__ = ["ClickRange", "ClickTargets"]


class ClickTargets:
    """Ranges of request ids and their links, the most recent ``max_ranges`` kept."""

    def __init__(self, *, max_ranges: int = 100_000) -> None:
        self.max_ranges = max_ranges
        self._starts: list[int] = []
        self._ranges: dict[int, ClickRange] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def remember(self, ranges: Iterable[ClickRange]) -> None:
        for click_range in ranges:
            if click_range.first_id in self._ranges or click_range.last_id < click_range.first_id:
                continue
            insort(self._starts, click_range.first_id)
            self._ranges[click_range.first_id] = click_range
        if len(self._starts) > self.max_ranges:
            # Ids grow with submission time: the lowest are the oldest emails, the least clicked.
            dropped = len(self._starts) - self.max_ranges
            for first_id in self._starts[:dropped]:
                del self._ranges[first_id]
            del self._starts[:dropped]

    def links_of(self, request_id: int) -> tuple[str, ...] | None:
        """The tracked links of email ``request_id`` if it is in a remembered range, else None
        (unknown here: ask the database)."""
        index = bisect_right(self._starts, request_id) - 1
        if index < 0:
            return None
        click_range = self._ranges[self._starts[index]]
        return click_range.urls if request_id <= click_range.last_id else None
