"""The narrow shared state of the pipeline: how feedback flows upstream without a channel.

The actor graph is a DAG (scheduler -> rate limiter -> sender pool -> post-processor). Everything
that must travel against that direction goes through this module instead: a wake-up for the
scheduler, the set of cancelled topics, the sending gate that an account-level error closes, the
"stop sending" signal of a graceful shutdown, and the register of emails handed to the provider
whose outcome is not yet persisted (which cancellation must not mark ``Stopped``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from sesender.models import ClaimedEmail, Deferred, Stopped

logger = logging.getLogger(__name__)


class Wakeup:
    """A level-triggered wake-up: ``set`` any number of times, ``wait`` returns once per round."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()


class CancelledTopics:
    """Topics cancelled by ``DELETE /v1/topics/{id}``, each up to the highest request id that
    existed at that moment: emails accepted later for the same topic are not affected.

    A cancellation is *pending* from the moment it is marked until the store has recorded it,
    then *confirmed*; the store's record is the truth, and confirmed cancellations are loaded
    from it at start. Emails of a pending cancellation are held back (never handed to the
    provider) but not yet stopped: if the store cannot record the cancellation, it is withdrawn
    and they go out as if it had never been asked for.
    """

    def __init__(self) -> None:
        self._up_to: dict[str, int] = {}
        self._pending: dict[int, tuple[str, int]] = {}
        self._next_mark = 0

    def cancel(self, topic_id: str, up_to_id: int) -> None:
        """A confirmed cancellation (recorded by the store)."""
        self._up_to[topic_id] = max(up_to_id, self._up_to.get(topic_id, 0))

    def mark(self, topic_id: str, up_to_id: int) -> int:
        """A pending cancellation; return its mark for :meth:`confirm` or :meth:`withdraw`."""
        self._next_mark += 1
        self._pending[self._next_mark] = (topic_id, up_to_id)
        return self._next_mark

    def confirm(self, mark: int) -> None:
        """The store recorded the cancellation."""
        topic_id, up_to_id = self._pending.pop(mark)
        self.cancel(topic_id, up_to_id)

    def withdraw(self, mark: int) -> None:
        """The store did not record the cancellation: forget it."""
        self._pending.pop(mark, None)

    def is_cancelled(self, topic_id: str, request_id: int) -> bool:
        """Whether the email must not be handed over (its cancellation confirmed or pending)."""
        if self.is_confirmed(topic_id, request_id):
            return True
        return any(
            topic == topic_id and request_id <= up_to for topic, up_to in self._pending.values()
        )

    def is_confirmed(self, topic_id: str, request_id: int) -> bool:
        """Whether the email is covered by a cancellation the store has recorded."""
        up_to = self._up_to.get(topic_id)
        return up_to is not None and request_id <= up_to

    def __len__(self) -> int:
        return len(self._up_to)

    @property
    def none(self) -> bool:
        """No cancellation at all, confirmed or pending: the common case, checked per batch so
        that the per-email checks can be skipped."""
        return not self._up_to and not self._pending


@dataclass(frozen=True, slots=True)
class GateStatistics:
    paused: bool
    reason: str
    paused_since: float | None
    pauses_total: int


class SendingGate:
    """Open while the account can send; closed (paused) after an account-level error.

    Closing never fails an email: the sender defers it back to the queue. The account monitor
    probes the provider and reopens the gate.
    """

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()
        self._closed = trio.Event()
        self._reason = ""
        self._paused_since: float | None = None
        self._pauses = 0
        self.probe_soon = False
        #: told of every pause this instance decided (not of pauses learned from another
        #: instance): with several instances on PostgreSQL, it tells them all.
        self.on_pause: Callable[[str], None] | None = None

    @property
    def is_paused(self) -> bool:
        return not self._open.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def pause(self, reason: str, *, probe_soon: bool = False, remote: bool = False) -> bool:
        """Close the gate; return True when this call paused it (False if already paused).

        ``probe_soon`` asks for a quick first probe: an unreachable provider is usually back in
        seconds, an account-level pause takes much longer. ``remote``: another instance paused
        (not passed on again).
        """
        if self.is_paused:
            return False
        if not remote and self.on_pause is not None:
            self.on_pause(reason)
        self.probe_soon = probe_soon
        self._open = trio.Event()
        self._closed.set()
        self._reason = reason
        self._paused_since = trio.current_time()
        self._pauses += 1
        return True

    def resume(self) -> None:
        if self.is_paused:
            self._reason = ""
            self._paused_since = None
            self._closed = trio.Event()
            self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()

    async def wait_paused(self) -> None:
        """Return once the gate is closed (used by the account monitor)."""
        await self._closed.wait()

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            paused=self.is_paused,
            reason=self._reason,
            paused_since=self._paused_since,
            pauses_total=self._pauses,
        )


class PipelineControl:
    """The shared control surface of one pipeline (one instance per service)."""

    def __init__(self) -> None:
        self.scheduler_wakeup = Wakeup()
        self.cancelled = CancelledTopics()
        self.gate = SendingGate()
        self.stop_sending = trio.Event()
        #: request id -> topic of every email handed to the backend whose outcome is not yet
        #: persisted: cancellation leaves these alone, and they bound duplicates after a crash.
        self.handed_over: dict[int, str] = {}
        #: the batch the rate limiter is waiting with (for its tokens, or for the gate to open)
        #: and the scope of that wait: a cancellation of one of its emails, or a shutdown,
        #: interrupts the wait, so a cancelled email never takes a token.
        self.token_wait: tuple[Sequence[ClaimedEmail], trio.CancelScope] | None = None
        #: free room in the send pipe at which the scheduler wants waking (set by the scheduler).
        self.scheduler_low_water = 1

    def note_room(self, free_room: int, taken: int = 1) -> None:
        """The rate limiter took ``taken`` emails, leaving ``free_room``: wake the scheduler when
        the room reached its mark with them (once per crossing, not for every email after)."""
        if free_room >= self.scheduler_low_water > free_room - taken:
            self.scheduler_wakeup.set()

    def wake_scheduler(self) -> None:
        self.scheduler_wakeup.set()

    def begin_stop(self) -> None:
        """Graceful shutdown: stop claiming, stop taking tokens, defer what is queued in memory."""
        self.stop_sending.set()
        self.scheduler_wakeup.set()
        if self.token_wait is not None:
            self.token_wait[1].cancel()

    def cancel_topic_in_memory(self, topic_id: str, up_to_id: int) -> tuple[int, list[int]]:
        """Mark the topic's cancellation pending; interrupt a token wait for it; return the mark
        (to confirm or withdraw once the store answered) and the ids to keep.

        Synchronous on purpose: between this call and the store update no email of the topic can
        be handed to the backend, because every hand-over checks ``cancelled`` first.
        """
        mark = self.cancelled.mark(topic_id, up_to_id)
        if self.token_wait is not None:
            waiting, scope = self.token_wait
            if any(e.topic_id == topic_id and e.request_id <= up_to_id for e in waiting):
                scope.cancel()
        return mark, [rid for rid, topic in self.handed_over.items() if topic == topic_id]

    def apply_cancellation(self, topic_id: str, up_to_id: int) -> None:
        """A cancellation another instance recorded: confirmed at once (the store has it), and a
        token wait for one of its emails is interrupted, as for a local one."""
        self.cancelled.cancel(topic_id, up_to_id)
        if self.token_wait is not None:
            waiting, scope = self.token_wait
            if any(e.topic_id == topic_id and e.request_id <= up_to_id for e in waiting):
                scope.cancel()

    def held_back(self, topic_id: str, request_id: int, now_ms: int) -> Stopped | Deferred:
        """The outcome for an email of a cancelled topic that was not handed over: ``Stopped``
        once the store recorded the cancellation; while it is pending, ``Deferred`` back to the
        queue, where the recorded cancellation stops it (or, withdrawn, lets it go out)."""
        if self.cancelled.is_confirmed(topic_id, request_id):
            return Stopped(request_id=request_id)
        return Deferred(request_id=request_id, due_at_ms=now_ms)
