"""InstanceCoordinator: what makes one instance a member of several on one PostgreSQL database.

Only started with ``DATABASE_URL``; with SQLite there is one instance and nothing to coordinate.
Two loops:

- **heartbeat**: every ``heartbeat`` seconds the instance writes its heartbeat (database clock),
  then requeues the claims of any instance silent for longer than ``lease`` (and forgets it). So
  a dead instance's emails go back to the queue within about ``lease + heartbeat`` seconds, sent
  again by a survivor: at-least-once, the duplicates bounded by what the dead instance had in
  flight. ``/ready`` reports the age of the last successful heartbeat.
- **listen**: ``LISTEN`` on a connection of its own: a submission anywhere wakes the scheduler;
  a cancellation anywhere is loaded from ``topic_cancellations`` and applied to the emails this
  instance holds in memory; an account pause anywhere pauses this instance too (each instance's
  account monitor then probes and resumes by itself). Between notifications it polls the
  cancellations every ``poll`` seconds, so one lost while the connection was down still arrives.

Pauses decided here are told to the others through the sending gate's ``on_pause`` hook.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from sesender.errors import ConfigError, StoreError
from sesender.pipeline.control import PipelineControl
from sesender.store.pg_notify import Notification
from sesender.store.pg_queries import CANCEL_CHANNEL, PAUSE_CHANNEL, QUEUE_CHANNEL, InstanceRate

logger = logging.getLogger(__name__)

#: Every this many heartbeats, also requeue claims whose instance left no row at all (a scan of
#: every claimed email); the other heartbeats only look for instances whose lease ran out.
SWEEP_EVERY = 10


class InstanceStore(Protocol):
    instance_id: str
    rate: InstanceRate

    async def register(self) -> list[InstanceRate]:
        """The first heartbeat, unless live instances have other rate settings (returned)."""
        ...

    async def heartbeat(self) -> bool:
        """Write the heartbeat; True when the instance's row had to be created anew."""
        ...

    async def requeue_dead_claims(self, *, lease_ms: int, now_ms: int, sweep: bool) -> int: ...

    async def cancellations(self) -> dict[str, int]: ...

    async def notify_pause(self, reason: str) -> None: ...

    async def leave(self) -> None: ...


def rate_settings_problem(mine: InstanceRate, others: list[InstanceRate]) -> str:
    def settings(rate: InstanceRate) -> str:
        return f"MAX_SEND_PER_SECOND={rate.max_send_per_second:g}, SEND_BURST={rate.send_burst:g}"

    running = "; ".join(f"{other.instance_id}: {settings(other)}" for other in others)
    return (
        f"this instance's {settings(mine)} differ from those of the running instances on this"
        f" database ({running}). Instances on one database share one account rate and must all"
        " have the same MAX_SEND_PER_SECOND and SEND_BURST; to change them, stop every instance"
        " (or wait until the others are gone) and start them with the new settings"
    )


class Listener(Protocol):
    async def wait(self, seconds: float) -> list[Notification]: ...


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    instance_id: str
    #: seconds since the last heartbeat was written (inf before the first).
    heartbeat_age: float
    #: the heartbeat is older than the lease: other instances may be requeueing our claims.
    stale: bool
    requeued_total: int
    notifications_total: int


class InstanceCoordinator:
    def __init__(
        self,
        *,
        store: InstanceStore,
        listener: Listener,
        control: PipelineControl,
        heartbeat: float,
        lease: float,
        now_ms: Callable[[], int],
        poll: float = 0.5,
    ) -> None:
        self._store = store
        self._listener = listener
        self._control = control
        self._heartbeat = heartbeat
        self._lease = lease
        self._now_ms = now_ms
        self._poll = poll
        self._last_beat: float | None = None
        self._requeued = 0
        self._notifications = 0
        self._pauses_out: trio.MemorySendChannel[str]
        self._pauses_in: trio.MemoryReceiveChannel[str]
        self._pauses_out, self._pauses_in = trio.open_memory_channel[str](16)
        self.attach(control)

    def attach(self, control: PipelineControl) -> None:
        """Work on ``control`` (the pipeline's, which exists only after the store is open)."""
        self._control = control
        control.gate.on_pause = self._paused_here

    @property
    def instance_id(self) -> str:
        return self._store.instance_id

    async def start_beating(self) -> None:
        """The first heartbeat, before the pipeline claims anything (so no survivor takes this
        instance's first claims for a dead one's). Raises :class:`ConfigError`, writing
        nothing, when live instances have another ``MAX_SEND_PER_SECOND`` or ``SEND_BURST``:
        they share one token bucket, which each refill caps at the asking instance's burst, so
        with differing settings one of them could wait for tokens for ever."""
        differing = await self._store.register()
        if differing:
            raise ConfigError([rate_settings_problem(self._store.rate, differing)])
        self._last_beat = trio.current_time()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._beat_loop)
            nursery.start_soon(self._listen_loop)
            nursery.start_soon(self._tell_pauses)
            task_status.started()

    async def leave(self) -> None:
        """A clean shutdown (every claim written back): drop the instance's row."""
        try:
            await self._store.leave()
        except StoreError as exc:
            logger.warning("could not remove this instance's heartbeat: %s", exc)

    # -- heartbeat ----------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        beats = 0
        while True:
            await trio.sleep(self._heartbeat)
            beats += 1
            try:
                revived = await self._store.heartbeat()
                self._last_beat = trio.current_time()
                if revived:
                    logger.error(
                        "this instance was silent for longer than the lease (%gs) and was taken"
                        " for dead: its claimed emails were requeued, and those it still holds"
                        " may be sent twice",
                        self._lease,
                        extra={"event": "taken_for_dead"},
                    )
                requeued = await self._store.requeue_dead_claims(
                    lease_ms=int(self._lease * 1000),
                    now_ms=self._now_ms(),
                    sweep=beats % SWEEP_EVERY == 0,
                )
            except StoreError as exc:
                logger.warning("heartbeat failed: %s", exc, extra={"event": "heartbeat_failed"})
                continue
            if requeued:
                self._requeued += requeued
                logger.warning(
                    "requeued %d emails claimed by an instance silent for more than %gs",
                    requeued,
                    self._lease,
                    extra={"event": "requeued_dead_claims", "count": requeued},
                )
                self._control.wake_scheduler()

    # -- notifications ------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        known: dict[str, int] = {}
        failures = 0
        next_poll = trio.current_time()
        while True:
            try:
                received = await self._listener.wait(self._poll)
                failures = 0
            except StoreError as exc:
                failures += 1
                if failures == 1:
                    logger.warning("notification listener lost its connection: %s", exc)
                await trio.sleep(min(5.0, 0.2 * failures))
                received = []
            self._notifications += len(received)
            channels = {n.channel for n in received}
            if QUEUE_CHANNEL in channels:
                self._control.wake_scheduler()
            for notification in received:
                if notification.channel == PAUSE_CHANNEL:
                    self._paused_elsewhere(notification.payload)
            if CANCEL_CHANNEL in channels or trio.current_time() >= next_poll:
                next_poll = trio.current_time() + self._poll
                try:
                    current = await self._store.cancellations()
                except StoreError:
                    continue
                for topic_id, up_to_id in current.items():
                    if known.get(topic_id, 0) < up_to_id:
                        self._control.apply_cancellation(topic_id, up_to_id)
                known = current

    # -- pauses -------------------------------------------------------------------------------

    def _paused_here(self, reason: str) -> None:
        # Many pauses at once: the others hear of the first ones.
        with contextlib.suppress(trio.WouldBlock):
            self._pauses_out.send_nowait(reason)

    async def _tell_pauses(self) -> None:
        async for reason in self._pauses_in:
            try:
                await self._store.notify_pause(reason)
            except StoreError as exc:
                logger.warning("could not tell the other instances of the pause: %s", exc)

    def _paused_elsewhere(self, payload: str) -> None:
        instance, _, reason = payload.partition(" ")
        if instance == self.instance_id:
            return
        if self._control.gate.pause(f"paused by instance {instance}: {reason}", remote=True):
            logger.error(
                "sending paused by instance %s: %s",
                instance,
                reason,
                extra={"event": "sending_paused", "reason": reason, "by": instance},
            )

    def status(self) -> InstanceStatus:
        age = math.inf if self._last_beat is None else trio.current_time() - self._last_beat
        return InstanceStatus(
            instance_id=self.instance_id,
            heartbeat_age=age,
            stale=age > self._lease,
            requeued_total=self._requeued,
            notifications_total=self._notifications,
        )
