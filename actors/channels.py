"""Bounded, named, typed pipes: trio memory channels plus the numbers an operator needs.

Why not bare ``trio.open_memory_channel``: every pipe between two actors is where work queues up,
so each one carries a name and counters (depth, peak depth, totals, waiting tasks) that
``statistics()`` exposes for metrics and for finding the bottleneck. Capacity must be a finite
``int``: an unbounded buffer hides a slow stage until memory runs out, while a bounded one pushes
back on the producer. ``PipeSender.free_room()`` tells a producer (the scheduler) how much it can
send right now without blocking, so it claims no more work than the pipeline can take.

The ends behave like trio's memory channels: ``send`` / ``send_nowait`` (``trio.WouldBlock``),
``receive`` / ``receive_nowait``, ``async for``, ``clone()`` per task when several tasks share an
end, and ``async with`` (or ``with``) so that closing the last sender ends the receivers' input
(``trio.EndOfChannel``, or the end of ``async for``) and shutdown cascades downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar, final

import trio

__all__ = ["PipeReceiver", "PipeSender", "PipeStatistics", "open_pipe"]

T = TypeVar("T")
SendT = TypeVar("SendT", contravariant=True)
ReceiveT = TypeVar("ReceiveT", covariant=True)


@dataclass(frozen=True, slots=True)
class PipeStatistics:
    """A snapshot of one pipe, the same from either end or any clone."""

    name: str
    capacity: int
    depth: int
    peak_depth: int
    sent_total: int
    received_total: int
    open_senders: int
    open_receivers: int
    waiting_senders: int
    waiting_receivers: int


class _Counters:
    """What trio's channel state does not count for us; shared by every end of one pipe."""

    __slots__ = ("capacity", "name", "received_total", "sent_total")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.sent_total = 0
        self.received_total = 0

    def snapshot(
        self, channel: trio.MemorySendChannel[T] | trio.MemoryReceiveChannel[T]
    ) -> PipeStatistics:
        stats = channel.statistics()
        return PipeStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=stats.current_buffer_used,
            peak_depth=stats.peak_buffer_used,
            sent_total=self.sent_total,
            received_total=self.received_total,
            open_senders=stats.open_send_channels,
            open_receivers=stats.open_receive_channels,
            waiting_senders=stats.tasks_waiting_send,
            waiting_receivers=stats.tasks_waiting_receive,
        )


@final
class PipeSender(trio.abc.SendChannel[SendT], Generic[SendT]):
    """The sending end of a pipe. Made by :class:`open_pipe`; ``clone()`` one per task."""

    __slots__ = ("_channel", "_closed", "_counters")

    def __init__(self, channel: trio.MemorySendChannel[SendT], counters: _Counters) -> None:
        self._channel = channel
        self._counters = counters
        self._closed = False

    @property
    def name(self) -> str:
        """The pipe's name, as shown in statistics and logs."""
        return self._counters.name

    def __repr__(self) -> str:
        return f"<PipeSender {self.name!r} capacity={self._counters.capacity}>"

    async def send(self, value: SendT) -> None:
        """Send ``value``, waiting while the pipe is full (that wait is the backpressure)."""
        await self._channel.send(value)
        self._counters.sent_total += 1

    def send_nowait(self, value: SendT) -> None:
        """Send ``value`` now or raise ``trio.WouldBlock`` if the pipe is full."""
        self._channel.send_nowait(value)
        self._counters.sent_total += 1

    def free_room(self) -> int:
        """How many items ``send_nowait`` would accept right now (0 once this end is closed).

        Free buffer slots plus receivers already waiting, since those take an item directly.
        """
        stats = self._channel.statistics()
        if self._closed or stats.open_receive_channels == 0:
            return 0
        free = self._counters.capacity - stats.current_buffer_used
        return free + stats.tasks_waiting_receive

    def clone(self) -> PipeSender[SendT]:
        """Another sending end of the same pipe, for another task.

        Receivers see the end of input only once every sender (original and clones) is closed.
        """
        return PipeSender(self._channel.clone(), self._counters)

    def close(self) -> None:
        """Close this end now (synchronous, for ``with`` and cleanup code)."""
        self._closed = True
        self._channel.close()

    async def aclose(self) -> None:
        """Close this end; a checkpoint, like every async method."""
        self._closed = True
        await self._channel.aclose()

    def __enter__(self) -> PipeSender[SendT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> PipeStatistics:
        """Return a frozen snapshot of the whole pipe."""
        return self._counters.snapshot(self._channel)


@final
class PipeReceiver(trio.abc.ReceiveChannel[ReceiveT], Generic[ReceiveT]):
    """The receiving end of a pipe. ``async for item in receiver`` runs until end of input."""

    __slots__ = ("_channel", "_counters")

    def __init__(self, channel: trio.MemoryReceiveChannel[ReceiveT], counters: _Counters) -> None:
        self._channel = channel
        self._counters = counters

    @property
    def name(self) -> str:
        """The pipe's name, as shown in statistics and logs."""
        return self._counters.name

    def __repr__(self) -> str:
        return f"<PipeReceiver {self.name!r} capacity={self._counters.capacity}>"

    async def receive(self) -> ReceiveT:
        """Wait for the next item; raise ``trio.EndOfChannel`` once every sender is closed."""
        value = await self._channel.receive()
        self._counters.received_total += 1
        return value

    def receive_nowait(self) -> ReceiveT:
        """Take the next item now, or raise ``trio.WouldBlock`` (or ``trio.EndOfChannel``)."""
        value = self._channel.receive_nowait()
        self._counters.received_total += 1
        return value

    def clone(self) -> PipeReceiver[ReceiveT]:
        """Another receiving end of the same pipe; each item goes to exactly one receiver."""
        return PipeReceiver(self._channel.clone(), self._counters)

    def close(self) -> None:
        """Close this end now; senders get ``trio.BrokenResourceError`` once all are closed."""
        self._channel.close()

    async def aclose(self) -> None:
        """Close this end; a checkpoint, like every async method."""
        await self._channel.aclose()

    def __enter__(self) -> PipeReceiver[ReceiveT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> PipeStatistics:
        """Return a frozen snapshot of the whole pipe."""
        return self._counters.snapshot(self._channel)


# Written as a class, like trio.open_memory_channel, so callers can say open_pipe[Email]("x", 8).
@final
class open_pipe(tuple[PipeSender[T], PipeReceiver[T]]):
    """Open a pipe named ``name`` holding at most ``capacity`` items: ``(sender, receiver)``.

    ``capacity`` is a finite ``int >= 0``; 0 means every send waits for a receiver (a rendezvous).
    """

    def __new__(  # type: ignore[misc]  # returns a plain tuple, as trio.open_memory_channel does
        cls, name: str, capacity: int
    ) -> tuple[PipeSender[T], PipeReceiver[T]]:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(
                f"pipe {name!r} needs a finite whole-number capacity >= 0, got {capacity!r}"
            )
        send_channel, receive_channel = trio.open_memory_channel[T](capacity)
        counters = _Counters(name, capacity)
        return PipeSender(send_channel, counters), PipeReceiver(receive_channel, counters)
