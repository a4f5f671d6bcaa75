"""MemoryBackend: the in-memory twin of SES, for tests and benchmarks.

It delivers nothing: every accepted email is recorded as a :class:`SentRecord` with the trio-clock
times at which ``send`` was entered and returned, so tests under ``MockClock`` can assert exact
timing and concurrency. ``keep_sent`` bounds how many records are kept (the last ones); the
service's own memory backend (``SENDER_BACKEND=memory``) keeps none, since nothing outside the
process can read them and a record per email kept for ever grows without bound; it still counts
every email in :meth:`MemoryBackend.statistics`.

It can imitate what SES does to a sender:

- ``latency`` (plus up to ``latency_jitter``) seconds of ``trio.sleep`` per call, so the autojump
  clock skips it and benchmarks can model a slow provider. A ``send_batch`` is one call, as a
  bulk request is: it lasts as long as the largest jitter drawn for its emails;
- ``throttle_rate``: that fraction of emails fails with ``TransientSendError(throttled=True,
  code="TooManyRequestsException")``. Whether a call is throttled depends only on ``seed`` and the
  email (request id, attempt, recipient), never on the order in which concurrent tasks happen to
  run, so a run is reproducible and a retry (next attempt) draws again;
- ``script``: a function called with each email that may raise any ``SendError``, for tests that
  need a precise failure on a precise email;
- ``pause(reason)`` / ``resume()``: while paused every send raises ``AccountSendError`` and
  ``account_status()`` reports ``can_send=False``, like an SES account whose sending is paused.

Black-box trigger (for tests that only control the submitted data, e.g. end-to-end tests against
the running service): a recipient whose local part starts with ``reject`` (case-insensitive, e.g.
``reject@example.com``, ``rejected+7@example.com``) fails with
``PermanentSendError(code="MessageRejected")``, as SES does for content it refuses.

Every email gets its own result (``send_batch`` returns the failures as values, ``send`` raises
its one). Order of checks per email: latency (per call), then paused, script, ``reject`` trigger,
throttling.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from sesender.backends.base import AccountStatus, OutgoingEmail, SendResult
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    TransientSendError,
)

__all__ = ["MemoryBackend", "MemoryStatistics", "SentRecord"]

REJECT_PREFIX = "reject"


@dataclass(frozen=True, slots=True)
class SentRecord:
    """One accepted email and the trio-clock times its ``send`` call started and finished."""

    message_id: str
    email: OutgoingEmail
    started_at: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    """A snapshot of what the backend has seen.

    ``throttled`` counts every ``TransientSendError`` with ``throttled=True`` (drawn or scripted);
    ``failed`` counts every other ``SendError``. ``attempts == sent + throttled + failed +
    in_flight`` at any moment (a cancelled call counts as an attempt only).
    """

    attempts: int
    sent: int
    throttled: int
    failed: int
    in_flight: int
    peak_in_flight: int
    paused: bool


class MemoryBackend:
    """Records messages instead of sending them; see the module docstring for the knobs."""

    name = "memory"

    def __init__(
        self,
        *,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        throttle_rate: float = 0.0,
        seed: int | None = None,
        script: Callable[[OutgoingEmail], None] | None = None,
        max_send_rate: float | None = None,
        clock: Callable[[], float] = trio.current_time,
        keep_sent: int | None = None,
    ) -> None:
        if keep_sent is not None and keep_sent < 0:
            raise ValueError(f"keep_sent must not be negative, got {keep_sent}")
        if latency < 0 or latency_jitter < 0:
            raise ValueError("latency and latency_jitter must not be negative")
        if not 0.0 <= throttle_rate <= 1.0:
            raise ValueError(f"throttle_rate must be between 0 and 1, got {throttle_rate}")
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.throttle_rate = throttle_rate
        # Without a seed, draws are still per-email but differ from run to run.
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        self.script = script
        self.max_send_rate = max_send_rate
        self.clock = clock
        self.closed = False
        #: the records kept: every one (None, what tests read), or only the last ``keep_sent``
        #: (a service's memory backend keeps none: nobody can read them, and a record per email
        #: held forever made a long run grow without bound and every email dearer to build).
        self._sent: deque[SentRecord] = deque(maxlen=keep_sent)
        self._keep_records = keep_sent != 0
        self._sent_total = 0
        self._sent_changed = trio.Event()
        self._pause_reason: str | None = None
        self._attempts = 0
        self._throttled = 0
        self._failed = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        # Message ids: one random prefix per backend and a counter, unique like a uuid4 each
        # but without reading os.urandom per email (a fifth of the pipeline's CPU at full speed).
        self._id_prefix = f"memory-{uuid.uuid4()}-"
        self._ids = itertools.count(1)

    @property
    def sent(self) -> list[SentRecord]:
        """Every accepted email so far (the last ``keep_sent`` of them when that was given), in
        the order ``send`` returned (a copy)."""
        return list(self._sent)

    def pause(self, reason: str = "paused") -> None:
        """Make every following send raise ``AccountSendError`` until :meth:`resume`."""
        self._pause_reason = reason

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._pause_reason = None

    async def wait_sent(self, count: int) -> None:
        """Return once at least ``count`` emails have been accepted (woken, never polling)."""
        while self._sent_total < count:
            await self._sent_changed.wait()

    async def send(self, email: OutgoingEmail) -> str:
        """Record ``email`` after the configured latency, or raise the failure chosen for it."""
        (result,) = await self.send_batch((email,))
        if isinstance(result, SendError):
            raise result
        return result

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """One call for the whole batch, like one bulk request: it lasts ``latency`` plus the
        largest jitter drawn for its emails, then each email gets its own result (recorded, or
        the failure chosen for it), in order."""
        started_at = self.clock()
        count = len(emails)
        self._attempts += count
        self._in_flight += count
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            # Drawn only when a knob needs them: seeding a generator per email is not free.
            drawing = bool(self.latency_jitter or self.throttle_rate)
            draws = [self._draw(email) if drawing else None for email in emails]
            jitter = 0.0
            if self.latency_jitter:
                jitter = max(draw.uniform(0.0, self.latency_jitter) for draw in draws if draw)
            await trio.sleep(self.latency + jitter)
            # One call returns once: every email of it is recorded with the same finishing time.
            finished_at = self.clock()
            if drawing or self._pause_reason is not None or self.script is not None:
                results = [
                    self._settle(email, started_at, finished_at, draw)
                    for email, draw in zip(emails, draws, strict=True)
                ]
            else:
                results = self._settle_plain(emails, started_at, finished_at)
            if any(isinstance(result, str) for result in results):
                self._sent_changed.set()
                self._sent_changed = trio.Event()
            return results
        finally:
            self._in_flight -= count

    def _draw(self, email: OutgoingEmail) -> random.Random:
        """This email's own random source: its draws do not depend on the order of calls."""
        return random.Random(f"{self.seed}:{email.request_id}:{email.attempt}:{email.recipient}")

    def _settle(
        self,
        email: OutgoingEmail,
        started_at: float,
        finished_at: float,
        draw: random.Random | None,
    ) -> SendResult:
        """Record the email, or count and return the failure chosen for it."""
        try:
            self._raise_failure_for(email, throttle_draw=draw.random() if draw else 1.0)
        except TransientSendError as exc:
            if exc.throttled:
                self._throttled += 1
            else:
                self._failed += 1
            return exc
        except SendError as exc:
            self._failed += 1
            return exc
        return self._accept(email, started_at, finished_at)

    def _accept(self, email: OutgoingEmail, started_at: float, finished_at: float) -> str:
        """Give ``email`` its message id, count it, and keep its record if records are kept."""
        message_id = self._id_prefix + str(next(self._ids))
        if self._keep_records:
            self._sent.append(SentRecord(message_id, email, started_at, finished_at))
        self._sent_total += 1
        return message_id

    def _settle_plain(
        self, emails: Sequence[OutgoingEmail], started_at: float, finished_at: float
    ) -> list[SendResult]:
        """:meth:`_settle` for each of ``emails`` when nothing is drawn, nothing scripted and
        the account not paused: then only the ``reject`` trigger can fail an email, and only
        one whose address starts with it, which alone takes the whole check. The same results
        in one loop (a benchmark sends tens of thousands of emails a second through here)."""
        accept, settle, width = self._accept, self._settle, len(REJECT_PREFIX)
        return [
            settle(email, started_at, finished_at, None)
            if email.recipient[:width].lower() == REJECT_PREFIX
            else accept(email, started_at, finished_at)
            for email in emails
        ]

    def _raise_failure_for(self, email: OutgoingEmail, *, throttle_draw: float) -> None:
        """Raise the failure this email gets, if any (the order is in the module docstring)."""
        if self._pause_reason is not None:
            raise AccountSendError(
                f"sending paused: {self._pause_reason}", code="SendingPausedException"
            )
        if self.script is not None:
            self.script(email)
        local_part = email.recipient.rpartition("@")[0]
        if local_part.lower().startswith(REJECT_PREFIX):
            raise PermanentSendError(
                f"recipient {email.recipient!r} is rejected by the memory backend",
                code="MessageRejected",
            )
        if throttle_draw < self.throttle_rate:
            raise TransientSendError(
                "Maximum sending rate exceeded. (memory backend)",
                code="TooManyRequestsException",
                throttled=True,
            )

    async def account_status(self) -> AccountStatus:
        """``can_send`` is False while paused, with the pause reason."""
        await trio.lowlevel.checkpoint()
        if self._pause_reason is not None:
            return AccountStatus(
                can_send=False, max_send_rate=self.max_send_rate, reason=self._pause_reason
            )
        return AccountStatus(can_send=True, max_send_rate=self.max_send_rate)

    async def aclose(self) -> None:
        """Nothing to release; marks the backend closed so tests can check who closes it."""
        await trio.lowlevel.checkpoint()
        self.closed = True

    def statistics(self) -> MemoryStatistics:
        """Return a frozen snapshot of the counters."""
        return MemoryStatistics(
            attempts=self._attempts,
            sent=self._sent_total,
            throttled=self._throttled,
            failed=self._failed,
            in_flight=self._in_flight,
            peak_in_flight=self._peak_in_flight,
            paused=self._pause_reason is not None,
        )
