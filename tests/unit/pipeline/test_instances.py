"""InstanceCoordinator with an in-memory store and listener, on trio's mock clock: what one
instance does with what the others tell it, and what it tells them."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from sesender.errors import ConfigError, StoreUnavailable
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.instances import SWEEP_EVERY, InstanceCoordinator
from sesender.store.pg_notify import Notification
from sesender.store.pg_queries import CANCEL_CHANNEL, PAUSE_CHANNEL, QUEUE_CHANNEL, InstanceRate


class FakeStore:
    instance_id = "me"
    rate = InstanceRate("me", 100.0, 10.0)

    def __init__(self) -> None:
        #: live instances with other rate settings, which register() reports.
        self.differing: list[InstanceRate] = []
        self.beats = 0
        self.sweeps: list[bool] = []
        self.requeue_next = 0
        self.cancelled: dict[str, int] = {}
        self.pauses: list[str] = []
        self.failing = False

    async def register(self) -> list[InstanceRate]:
        if self.differing:
            return self.differing
        await self.heartbeat()
        return []

    async def heartbeat(self) -> bool:
        if self.failing:
            raise StoreUnavailable("down")
        self.beats += 1
        revived, self.revive = self.revive, False
        return self.beats == 1 or revived

    revive = False

    async def requeue_dead_claims(self, *, lease_ms: int, now_ms: int, sweep: bool) -> int:
        assert lease_ms == 3000
        self.sweeps.append(sweep)
        requeued, self.requeue_next = self.requeue_next, 0
        return requeued

    async def cancellations(self) -> dict[str, int]:
        return dict(self.cancelled)

    async def notify_pause(self, reason: str) -> None:
        self.pauses.append(reason)

    async def leave(self) -> None:
        pass


class FakeListener:
    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Notification](100)

    async def wait(self, seconds: float) -> list[Notification]:
        with trio.move_on_after(seconds):
            return [await self.receive.receive()]
        return []


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def started(
    nursery: trio.Nursery, store: FakeStore, listener: FakeListener, control: PipelineControl
) -> InstanceCoordinator:
    coordinator = InstanceCoordinator(
        store=store,
        listener=listener,
        control=control,
        heartbeat=1.0,
        lease=3.0,
        now_ms=lambda: 0,
    )
    await coordinator.start_beating()
    await nursery.start(coordinator.run)
    return coordinator


async def test_other_rate_settings_on_a_live_instance_refuse_the_start() -> None:
    store = FakeStore()
    store.differing = [InstanceRate("them", 50.0, 10.0)]
    coordinator = InstanceCoordinator(
        store=store,
        listener=FakeListener(),
        control=PipelineControl(),
        heartbeat=1.0,
        lease=3.0,
        now_ms=lambda: 0,
    )
    with pytest.raises(ConfigError) as raised:
        await coordinator.start_beating()
    (problem,) = raised.value.problems
    assert "MAX_SEND_PER_SECOND=100, SEND_BURST=10" in problem  # this instance's
    assert "them: MAX_SEND_PER_SECOND=50, SEND_BURST=10" in problem  # the running one's
    assert store.beats == 0  # nothing written: the others never count it as an instance
    assert math.isinf(coordinator.status().heartbeat_age)


async def test_notifications_wake_cancel_and_pause(clock: trio.testing.MockClock) -> None:
    store, listener, control = FakeStore(), FakeListener(), PipelineControl()
    async with trio.open_nursery() as nursery:
        coordinator = await started(nursery, store, listener, control)
        await listener.send.send(Notification(QUEUE_CHANNEL, ""))
        await trio.testing.wait_all_tasks_blocked()
        assert control.scheduler_wakeup._event.is_set()

        # A cancellation recorded by another instance: applied here, a token wait interrupted.
        from sesender.models import ClaimedEmail, Content

        email = ClaimedEmail(7, "t", "a@example.com", Content("s", "b"), 0)
        with trio.CancelScope() as scope:
            control.token_wait = ([email], scope)
            store.cancelled = {"t": 9}
            await listener.send.send(Notification(CANCEL_CHANNEL, "t"))
            await trio.sleep(10)
        assert scope.cancelled_caught
        assert control.cancelled.is_confirmed("t", 7)
        assert not control.cancelled.is_confirmed("t", 10)

        # Another instance paused: so does this one (and does not echo it).
        await listener.send.send(Notification(PAUSE_CHANNEL, "other account paused"))
        await trio.testing.wait_all_tasks_blocked()
        assert control.gate.is_paused
        assert "other" in control.gate.reason
        assert store.pauses == []
        # Its own notification coming back changes nothing.
        control.gate.resume()
        await listener.send.send(Notification(PAUSE_CHANNEL, "me quota"))
        await trio.testing.wait_all_tasks_blocked()
        assert not control.gate.is_paused

        # A pause decided here is told to the others.
        assert control.gate.pause("quota exceeded")
        await trio.testing.wait_all_tasks_blocked()
        assert store.pauses == ["quota exceeded"]
        assert coordinator.status().notifications_total == 4
        nursery.cancel_scope.cancel()


async def test_a_cancellation_missed_by_notify_arrives_by_poll(
    clock: trio.testing.MockClock,
) -> None:
    store, listener, control = FakeStore(), FakeListener(), PipelineControl()
    async with trio.open_nursery() as nursery:
        await started(nursery, store, listener, control)
        store.cancelled = {"lost": 3}  # no notification at all
        await trio.sleep(0.6)
        assert control.cancelled.is_confirmed("lost", 3)
        nursery.cancel_scope.cancel()


async def test_heartbeats_requeue_wake_and_go_stale(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store, listener, control = FakeStore(), FakeListener(), PipelineControl()
    async with trio.open_nursery() as nursery:
        coordinator = await started(nursery, store, listener, control)
        store.requeue_next = 5
        control.scheduler_wakeup.clear()
        await trio.sleep(1.5)
        assert store.beats == 2  # the first, before the pipeline, and one a second after
        assert coordinator.status().requeued_total == 5
        assert control.scheduler_wakeup._event.is_set()
        await trio.sleep(SWEEP_EVERY)
        assert store.sweeps.count(True) == 1  # the full sweep every SWEEP_EVERY beats
        assert coordinator.status().stale is False
        store.failing = True  # the database is away: no heartbeat, the lease runs out
        await trio.sleep(3.5)
        status = coordinator.status()
        assert status.stale is True
        assert status.heartbeat_age > 3
        store.failing = False
        store.revive = True  # meanwhile another instance removed its row
        await trio.sleep(1.1)
        assert coordinator.status().stale is False
        events = [getattr(record, "event", None) for record in caplog.records]
        assert events.count("taken_for_dead") == 1
        nursery.cancel_scope.cancel()


def test_no_heartbeat_yet_is_infinitely_old() -> None:
    async def check() -> None:
        coordinator = InstanceCoordinator(
            store=FakeStore(),
            listener=FakeListener(),
            control=PipelineControl(),
            heartbeat=1.0,
            lease=3.0,
            now_ms=lambda: 0,
        )
        assert math.isinf(coordinator.status().heartbeat_age)
        assert coordinator.status().stale

    trio.run(check)
