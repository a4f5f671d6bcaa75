"""WriteHealth: does the database take writes right now? Learned from the writes themselves.

A full disk or a read-only database file leaves reads working, so a read ``ping`` cannot see it.
Every write goes through the store's writer lane, so the store reports each write that the
database refused (:class:`~sesender.errors.StoreUnavailable`) and each write that committed a
change; this object turns those into one state: failing since when, and why. ``/ready``, the
metrics and the logs read it. A write that changed nothing (a claim that found no due email)
touches no page and proves nothing, so only committed changes end an episode.

Each episode is logged once at ERROR when it starts (one Sentry event, not one per retry) and
once at WARNING when it ends; the actors that retry their writes log their own retries quietly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriteHealthStatus:
    #: True while the latest write attempt was refused and no change has committed since.
    failing: bool
    #: When the current episode began (Unix ms), or None when writes work.
    failing_since_ms: int | None
    #: The database's message for the latest refused write ("" before any).
    last_error: str
    #: Refused writes since start.
    failures_total: int
    #: Episodes since start (each is one ERROR log line and one Sentry event).
    episodes_total: int


class WriteHealth:
    """Thread-safe: the store's writer lane reports from its worker thread's caller."""

    def __init__(self, *, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self._failing_since: int | None = None
        self._last_error = ""
        self._failures = 0
        self._episodes = 0

    def refused(self, error: Exception) -> None:
        """A write was refused because the database cannot take writes."""
        with self._lock:
            self._failures += 1
            self._last_error = str(error)
            starts = self._failing_since is None
            if starts:
                self._failing_since = self._now_ms()
                self._episodes += 1
        if starts:
            logger.error(
                "the database refuses writes: %s; submissions answer 503 and the pipeline keeps"
                " its outcomes in memory and retries until it clears",
                error,
                extra={"event": "store_unavailable", "error": str(error)},
            )

    def committed(self) -> None:
        """A write committed at least one change: the database takes writes again."""
        with self._lock:
            since = self._failing_since
            if since is None:
                return
            self._failing_since = None
        logger.warning(
            "the database takes writes again after %.1fs",
            (self._now_ms() - since) / 1000,
            extra={"event": "store_recovered"},
        )

    def status(self) -> WriteHealthStatus:
        with self._lock:
            return WriteHealthStatus(
                failing=self._failing_since is not None,
                failing_since_ms=self._failing_since,
                last_error=self._last_error,
                failures_total=self._failures,
                episodes_total=self._episodes,
            )
