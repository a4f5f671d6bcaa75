"""Signals become one shutdown trigger; the composition root decides what shutting down means.

Why a trigger object instead of cancelling on SIGTERM: the service shuts down in a fixed order
(stop HTTP intake, stop claiming, drain, deadline, cancel), so a signal must only *start* that
sequence. ``ShutdownTrigger.wait`` fits hypercorn's ``shutdown_trigger`` argument directly, and the
trigger can also be fired by code (a fatal condition, a test) with a reason for the logs.

A second signal while shutting down is logged and otherwise ignored. The shutdown sequence already
ends with a hard deadline, and the orchestrator follows up with SIGKILL after its grace period;
raising KeyboardInterrupt instead would look like a crash to the supervisor and could cut short the
one shielded step that persists sends already made. :func:`watch_signals` keeps its handlers
installed until cancelled for the same reason: with trio's defaults restored, a second SIGTERM
would kill the process at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable

import trio

__all__ = ["ShutdownTrigger", "watch_signals"]

logger = logging.getLogger("actors.shutdown")


class ShutdownTrigger:
    """A one-way switch with a reason: set once, never cleared; the first reason wins."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._reason: str | None = None

    @property
    def is_set(self) -> bool:
        """Whether shutdown has been triggered."""
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why shutdown was triggered first, or None while running."""
        return self._reason

    def trigger(self, reason: str) -> None:
        """Start shutting down; later calls keep the first reason and do nothing else."""
        if self._event.is_set():
            return
        self._reason = reason
        self._event.set()

    async def wait(self) -> None:
        """Return once shutdown has been triggered (immediately if it already was)."""
        await self._event.wait()


async def watch_signals(
    trigger: ShutdownTrigger,
    *,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Trigger shutdown on the first of ``signals``; runs until cancelled.

    ``task_status.started()`` is called once the handlers are installed, so a signal sent after
    ``await nursery.start(watch_signals, trigger)`` returns is never lost. Must run in the main
    thread (a trio requirement for signal handlers).
    """
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for number in received:
            name = signal.Signals(number).name
            if trigger.is_set:
                logger.warning(
                    "received %s while already shutting down (%s); still shutting down",
                    name,
                    trigger.reason,
                    extra={"signal": name},
                )
            else:
                logger.info("received %s, shutting down", name, extra={"signal": name})
                trigger.trigger(f"signal {name}")
