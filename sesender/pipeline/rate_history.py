"""SendRateHistory: successful sends per second over the last minutes, for the dashboard.

A ring of per-second counters keyed by wall-clock second (from the injected ``now_ms``), so
recording is O(1) on the send path and a snapshot costs the window's length, whatever the rate.
"""

from __future__ import annotations

from collections.abc import Callable


class SendRateHistory:
    """The default ring (601 seconds) holds the dashboard's 10-minute window: the current,
    unfinished second takes one slot and is never shown."""

    def __init__(self, *, now_ms: Callable[[], int], window_seconds: int = 601) -> None:
        self._now_ms = now_ms
        self._window = window_seconds
        self._seconds = [-1] * window_seconds
        self._counts = [0] * window_seconds

    def record(self, count: int = 1) -> None:
        second = self._now_ms() // 1000
        slot = second % self._window
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += count

    def snapshot(self, seconds: int) -> list[tuple[int, int]]:
        """(second, sends) for each of the last ``seconds`` whole seconds, oldest first; the
        current, unfinished second is left out."""
        seconds = max(1, min(seconds, self._window - 1))
        now = self._now_ms() // 1000
        result = []
        for second in range(now - seconds, now):
            slot = second % self._window
            result.append((second, self._counts[slot] if self._seconds[slot] == second else 0))
        return result
