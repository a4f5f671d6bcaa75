"""Scheduler timing under the autojump clock: exact instants of claims and wake-ups."""

from __future__ import annotations

import trio
import trio.lowlevel
import trio.testing

from actors import open_pipe
from sesender.models import ClaimedEmail, Status
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.scheduler import Scheduler
from tests.unit.pipeline.fakes import FakeQueueStore, trio_ms


def make(store: FakeQueueStore, capacity: int = 100, interval: float = 10.0):  # type: ignore[no-untyped-def]
    control = PipelineControl()
    send_tx, send_rx = open_pipe[ClaimedEmail]("send", capacity)
    scheduler = Scheduler(
        store=store,
        send_tx=send_tx,
        control=control,
        interval=interval,
        now_ms=trio_ms,
        max_batch=1000,
    )
    return scheduler, control, send_rx


async def test_claims_at_start_then_polls_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(3)
    scheduler, control, send_rx = make(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        assert [(await send_rx.receive()).request_id for _ in range(3)] == [1, 2, 3]
        await trio.sleep(25)
        control.stop_sending.set()
        control.wake_scheduler()
    # Stopping wakes it only to leave: no claim at 25.
    assert [t for t, _ in store.claims] == [0, 10, 20]


async def test_a_wakeup_claims_immediately(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeQueueStore()
    scheduler, control, send_rx = make(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(3.25)
        store.add(2, due=trio_ms())
        control.wake_scheduler()
        email = await send_rx.receive()
        assert email.request_id == 1
        assert trio.current_time() == 3.25
        control.stop_sending.set()
        control.wake_scheduler()


async def test_sleeps_exactly_until_the_next_due_email(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(1, due=3_500)
    scheduler, control, send_rx = make(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await send_rx.receive()
        assert trio.current_time() == 3.5
        control.stop_sending.set()
        control.wake_scheduler()


async def test_never_claims_more_than_the_pipe_has_room_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(25)
    scheduler, control, send_rx = make(store, capacity=10)
    assert scheduler.low_water_room == 5
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.testing.wait_all_tasks_blocked()
        assert store.claims == [(0, 10)]
        await trio.sleep(1)
        # Taking 4 leaves 4 free: below the low-water mark, no claim yet.
        for _ in range(4):
            await send_rx.receive()
            control.note_room(10 - send_rx.statistics().depth)
        await trio.sleep(1)
        assert len(store.claims) == 1
        # The 5th take reaches the mark: the rate limiter's note wakes the scheduler at once.
        await send_rx.receive()
        control.note_room(10 - send_rx.statistics().depth)
        await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        assert store.claims[-1] == (2, 5)
        assert send_rx.statistics().depth == 10
        control.stop_sending.set()
        control.wake_scheduler()
    assert send_rx.statistics().peak_depth == 10


async def test_stop_closes_the_pipe(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeQueueStore()
    scheduler, control, send_rx = make(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        control.begin_stop()
    assert [x async for x in send_rx] == []


def test_send_rate_history_counts_whole_seconds() -> None:
    from sesender.pipeline.rate_history import SendRateHistory

    now = [10_500]
    history = SendRateHistory(now_ms=lambda: now[0], window_seconds=5)
    history.record()
    history.record(2)
    now[0] = 11_200
    history.record()
    now[0] = 13_000
    assert history.snapshot(3) == [(10, 3), (11, 1), (12, 0)]
    now[0] = 16_100  # slot of second 11 reused by 16: old counts never leak
    history.record()
    now[0] = 17_000
    assert history.snapshot(4) == [(13, 0), (14, 0), (15, 0), (16, 1)]


async def test_due_emails_of_a_cancelled_topic_are_stopped_by_the_claim_and_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore(cancelled={"gone": 2})
    store.add(2, topic="gone")
    store.add(1, topic="kept")
    stopped: list[int] = []
    control = PipelineControl()
    send_tx, send_rx = open_pipe[ClaimedEmail]("send", 100)
    scheduler = Scheduler(
        store=store,
        send_tx=send_tx,
        control=control,
        interval=10.0,
        now_ms=trio_ms,
        on_stopped=stopped.append,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        assert (await send_rx.receive()).request_id == 3
        control.stop_sending.set()
        control.wake_scheduler()
    assert stopped == [2]
    assert store.by_status(Status.STOPPED) == [1, 2]
