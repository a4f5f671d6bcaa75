"""ThreadLane: limits, statistics, and what cancellation does to a call."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import trio
import trio.testing

from actors.testing import wait_until
from actors.threads import ThreadLane, ThreadLaneStatistics


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_limit_must_be_a_whole_number_of_threads(limit: int) -> None:
    with pytest.raises(ValueError, match="thread lane 'db' needs a whole-number limit"):
        ThreadLane("db", limit)


async def test_run_returns_and_raises_and_counts_both() -> None:
    lane = ThreadLane("db", 2)
    assert (lane.name, lane.limit) == ("db", 2)
    assert await lane.run(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await lane.run(divmod, 1, 0)
    stats = lane.statistics()
    assert stats == ThreadLaneStatistics(name="db", limit=2, running=0, waiting=0, completed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.completed = 0  # type: ignore[misc]


async def test_limit_queues_calls_and_statistics_show_it() -> None:
    lane = ThreadLane("ses", 1)
    release = threading.Event()

    async def hold() -> None:
        await lane.run(release.wait)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        stats = lane.statistics()
        assert (stats.running, stats.waiting, stats.completed) == (1, 1, 0)
        release.set()
    assert lane.statistics().completed == 2


async def test_cancelled_while_queued_never_runs() -> None:
    lane = ThreadLane("ses", 1)
    release = threading.Event()
    ran: list[str] = []
    queued = trio.CancelScope()

    async def hold() -> None:
        await lane.run(release.wait)

    async def queued_call() -> None:
        with queued:
            await lane.run(ran.append, "queued")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(queued_call)
        await trio.testing.wait_all_tasks_blocked()
        assert lane.statistics().waiting == 1
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert lane.statistics().waiting == 0
        release.set()
    assert queued.cancelled_caught
    assert ran == []
    assert lane.statistics().completed == 1


async def test_cancelled_while_running_waits_for_the_thread() -> None:
    lane = ThreadLane("db", 1)
    started = threading.Event()
    release = threading.Event()
    written: list[str] = []

    def blocking_write() -> None:
        started.set()
        release.wait()
        written.append("row")

    running = trio.CancelScope()

    async def write() -> None:
        with running:
            await lane.run(blocking_write)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await wait_until(started.is_set, timeout=5)
        running.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert written == []  # not abandoned: the task still waits for its thread
        assert lane.statistics().running == 1
        release.set()
    assert written == ["row"]
    assert lane.statistics().completed == 1


async def test_run_abandonable_returns_at_once_when_cancelled() -> None:
    release = threading.Event()
    started = threading.Event()
    lane = ThreadLane("poll", 1)

    def block() -> str:
        started.set()
        release.wait(10)
        return "done"

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_started() -> None:
                await trio.to_thread.run_sync(started.wait, 10)
                scope.cancel()

            nursery.start_soon(cancel_when_started)
            await lane.run_abandonable(block)
    assert scope.cancelled_caught
    release.set()
    assert await lane.run_abandonable(lambda: "again") == "again"
