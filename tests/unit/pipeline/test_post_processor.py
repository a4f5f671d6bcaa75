"""PostProcessor: batches by size and by time; a failing database loses nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest
import trio
import trio.testing

from actors import PipeSender, open_pipe
from sesender.errors import StoreError, StoreUnavailable
from sesender.models import Deferred, Outcome, Retry, Sent, Status
from sesender.pipeline.control import PipelineControl, Wakeup
from sesender.pipeline.post_processor import (
    CHAINED_BATCHES,
    PostProcessor,
    PostProcessorStatistics,
)
from tests.unit.pipeline.fakes import FakeQueueStore, trio_ms


def rig(  # type: ignore[no-untyped-def]
    store: FakeQueueStore, on_flush: Callable[[Sequence[Outcome]], None] | None = None
):
    outcome_tx, outcome_rx = open_pipe[Sequence[Outcome]]("outcome", 1000)
    control = PipelineControl()
    post = PostProcessor(
        store=store,
        outcome_rx=outcome_rx,
        control=control,
        now_ms=trio_ms,
        flush_size=100,
        flush_interval=0.5,
        on_flush=on_flush,
    )
    return post, outcome_tx, control


def claimed(store: FakeQueueStore, count: int) -> list[int]:
    ids = store.add(count)
    for request_id in ids:
        store.rows[request_id].status = Status.PROCESSED
    return ids


async def test_flushes_by_size_at_once_and_by_time_after_half_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    ids = claimed(store, 250)
    post, outcome_tx, _ = rig(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        for request_id in ids:
            await outcome_tx.send([Sent(request_id, f"m{request_id}", 1, 0)])
        await trio.sleep(2)
        await outcome_tx.aclose()
    assert store.flushes == [(0, 100), (0, 100), (0.5, 50)]
    assert len(store.by_status(Status.SENT)) == 250


async def test_the_time_limit_counts_from_the_oldest_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    ids = claimed(store, 3)
    post, outcome_tx, _ = rig(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await trio.sleep(1)
        await outcome_tx.send([Sent(ids[0], "a", 1, 0)])
        await trio.sleep(0.3)
        await outcome_tx.send([Sent(ids[1], "b", 1, 0)])
        await trio.sleep(0.4)
        await outcome_tx.send([Sent(ids[2], "c", 1, 0)])
        await outcome_tx.aclose()
    # The third outcome came at 1.7 and the pipe closed at once: flushed at 1.7, alone.
    assert store.flushes == [(1.5, 2), (pytest.approx(1.7), 1)]


async def test_end_of_channel_flushes_what_is_left(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeQueueStore()
    ids = claimed(store, 2)
    post, outcome_tx, control = rig(store)
    control.handed_over.update({ids[0]: "t", ids[1]: "t"})
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await outcome_tx.send([Sent(ids[0], "a", 1, 0)])
        await outcome_tx.send([Sent(ids[1], "b", 1, 0)])
        await outcome_tx.aclose()
    assert store.flushes == [(0, 2)]
    assert control.handed_over == {}


async def test_a_refusing_database_is_retried_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore(unavailable_writes=3)
    ids = claimed(store, 5)
    post, outcome_tx, _ = rig(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        for request_id in ids:
            await outcome_tx.send([Sent(request_id, "m", 1, 0)])
        await outcome_tx.aclose()
    # The pipe closed at once (flush at 0), then three refusals retried after 0.1 + 0.5 + 1.0 s.
    ((flushed_at, flushed),) = store.flushes
    assert flushed_at == pytest.approx(1.6)
    assert flushed == 5
    assert post.statistics().write_failures == 3
    assert len(store.by_status(Status.SENT)) == 5


async def send_in_groups(outcome_tx: PipeSender[Sequence[Outcome]], ids: list[int]) -> None:
    """Outcomes of ``ids`` in groups of 50: the first 100 (one batch, whose write starts at
    once), then at 0.1 s the rest, which is gathered while that write runs (in whatever order
    trio runs the two tasks at first, the first write carries exactly the first batch)."""
    for first in range(0, len(ids), 50):
        if first == 100:
            await trio.sleep(0.1)
        await outcome_tx.send([Sent(i, "m", 1, 0) for i in ids[first : first + 50]])


async def test_the_next_batches_are_gathered_while_one_is_written_and_go_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore(write_seconds=1.0)
    ids = claimed(store, 300)
    post, outcome_tx, _ = rig(store)
    seen_while_writing: list[tuple[int, int]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await send_in_groups(outcome_tx, ids)
        for pause in (0.4, 1.0):  # at 0.5 and 1.5: halfway through the first and second writes
            await trio.sleep(pause)
            seen_while_writing.append((post.statistics().pending, outcome_tx.statistics().depth))
        await outcome_tx.aclose()
    # While the first batch is written (0 to 1 s), the next two are gathered (pending) and the
    # pipe is empty; at 1 s both go to the store in one call, each its own write of 100, one
    # after the other (1 to 2 and 2 to 3 s). Each write starts as soon as the one before ends.
    assert seen_while_writing == [(200, 0), (0, 0)]
    assert store.write_calls == [1, 2]
    assert store.flushes == [(1.0, 100), (2.0, 100), (3.0, 100)]
    assert post.statistics().flushes == 3


async def test_at_most_a_few_full_batches_wait_and_go_in_one_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Outcomes arrive far faster than they are written: the writer takes what filled while it
    # wrote, never more than CHAINED_BATCHES batches at once, and the rest waits in the pipe.
    store = FakeQueueStore(write_seconds=1.0)
    ids = claimed(store, 1200)
    post, outcome_tx, _ = rig(store)
    most_pending = 0

    async def watch() -> None:
        nonlocal most_pending
        while True:
            most_pending = max(most_pending, post.statistics().pending)
            await trio.sleep(0.25)

    async with trio.open_nursery() as watching:
        watching.start_soon(watch)
        async with trio.open_nursery() as nursery:  # until everything is written
            await nursery.start(post.run)
            for first in range(0, 1200, 50):
                await outcome_tx.send([Sent(i, "m", 1, 0) for i in ids[first : first + 50]])
            await outcome_tx.aclose()
        watching.cancel_scope.cancel()
    assert max(store.write_calls) == CHAINED_BATCHES
    assert sum(store.write_calls) == 12
    assert [count for _, count in store.flushes] == [100] * 12
    assert most_pending <= CHAINED_BATCHES * 100
    assert len(store.by_status(Status.SENT)) == 1200


async def three_batches(
    store: FakeQueueStore, during_the_first_write: Callable[[], None]
) -> tuple[PostProcessor, PipelineControl]:
    """300 outcomes of handed-over emails through a post-processor whose store takes 1 s per
    batch; ``during_the_first_write`` runs at 0.5 s, while the next two batches wait."""
    ids = claimed(store, 300)
    post, outcome_tx, control = rig(store)
    control.handed_over.update(dict.fromkeys(ids, "t"))
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await send_in_groups(outcome_tx, ids)
        await trio.sleep(0.4)  # the first batch is being written, the next two are gathered
        during_the_first_write()
        await outcome_tx.aclose()
    assert len(store.by_status(Status.SENT)) == 300
    assert control.handed_over == {}
    assert [count for _, count in store.flushes] == [100, 100, 100]
    return post, control


async def test_a_refused_call_of_several_batches_is_retried_whole_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore(write_seconds=1.0)

    def refuse_the_next_call() -> None:  # the call that carries the next two, refused once
        store.unavailable_writes = 1

    post, _ = await three_batches(store, refuse_the_next_call)
    assert store.write_calls == [1, 2, 2]
    assert post.statistics().write_failures == 1


async def test_a_call_that_wrote_only_its_first_batch_is_followed_by_one_for_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A written batch is never written again (a Retry written twice would requeue an email
    # claimed anew): only the batch the store did not write goes in the next call.
    store = FakeQueueStore(write_seconds=1.0)

    def write_one_of_the_next_call() -> None:  # the call that carries the next two writes one
        store.refuse_after_batches = 1

    post, _ = await three_batches(store, write_one_of_the_next_call)
    assert store.write_calls == [1, 2, 1]
    assert post.statistics().flushes == 3


async def test_each_written_batch_is_reported_and_counted_and_the_store_gets_the_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    ids = claimed(store, 250)
    reported: list[int] = []
    post, outcome_tx, _ = rig(store, on_flush=lambda batch: reported.append(len(batch)))
    assert post.statistics() == PostProcessorStatistics(0, 0, 0, 0, 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await trio.sleep(3)
        for request_id in ids:
            await outcome_tx.send([Sent(request_id, f"m{request_id}", 1, 0)])
        await trio.sleep(2)
        await outcome_tx.aclose()
    assert reported == [100, 100, 50]
    stats = post.statistics()
    assert (stats.flushes, stats.flushed, stats.largest_batch, stats.pending) == (3, 250, 100, 0)
    # The time each call is made, from the post-processor's clock (trio's, in ms, here).
    assert store.write_now_ms == [3000] * (len(store.write_calls) - 1) + [3500]


async def woken(wakeup: Wakeup) -> bool:
    """Whether ``wakeup`` was set (its wait returns at once)."""
    with trio.move_on_after(0.001) as waiting:
        await wakeup.wait()
    return not waiting.cancelled_caught


async def test_outcomes_that_requeue_wake_the_scheduler_and_others_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    ids = claimed(store, 4)
    post, outcome_tx, control = rig(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(post.run)
        await outcome_tx.send([Sent(ids[0], "a", 1, 0), Sent(ids[1], "b", 1, 0)])
        await trio.sleep(1)  # written at 0.5
        assert not await woken(control.scheduler_wakeup)
        await outcome_tx.send([Retry(ids[2], "throttled", 1, 0), Sent(ids[3], "d", 1, 0)])
        await trio.sleep(1)
        assert await woken(control.scheduler_wakeup)
        control.scheduler_wakeup.clear()
        await outcome_tx.send([Deferred(ids[2], 0)])
        await outcome_tx.aclose()
    assert await woken(control.scheduler_wakeup)


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (StoreUnavailable("database unavailable: disk is full"), logging.WARNING),
        (StoreError("database error: constraint"), logging.ERROR),
    ],
)
async def test_a_refused_write_is_logged_with_what_waits_and_when_it_is_tried_again(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    error: StoreError,
    level: int,
) -> None:
    refusals = [error]

    class RefusingOnce(FakeQueueStore):
        async def record_outcome_batches(
            self, batches: Sequence[Sequence[Outcome]], *, now_ms: int
        ) -> int:
            if refusals:
                raise refusals.pop()
            return await super().record_outcome_batches(batches, now_ms=now_ms)

    store = RefusingOnce()
    ids = claimed(store, 3)
    post, outcome_tx, _ = rig(store)
    with caplog.at_level(logging.WARNING, logger="sesender.pipeline.post_processor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(post.run)
            await outcome_tx.send([Sent(i, "m", 1, 0) for i in ids])
            await outcome_tx.aclose()
    (record,) = caplog.records
    assert record.levelno == level
    assert record.getMessage() == f"could not persist 3 outcomes ({error}); retrying in 0.1s"
    assert record.__dict__["event"] == "outcome_write_failed"
    assert len(store.by_status(Status.SENT)) == 3
