"""RateLimiter: exact release times, cancellation without tokens, deferral on shutdown."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from actors import TokenBucket, open_pipe
from sesender.models import ClaimedEmail, Content, Deferred, Outcome, Stopped
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.rate_limiter import RateLimiter
from tests.unit.pipeline.fakes import trio_ms


def email(request_id: int, topic: str = "t") -> ClaimedEmail:
    return ClaimedEmail(request_id, topic, f"u{request_id}@example.com", Content("s", "b"), 0)


class Rig:
    def __init__(self, rate: float = 10, burst: float = 1, max_batch: int = 1) -> None:
        self.control = PipelineControl()
        self.send_tx, send_rx = open_pipe[ClaimedEmail]("send", 100)
        dispatch_tx, self.dispatch_rx = open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)
        outcome_tx, self.outcome_rx = open_pipe[Sequence[Outcome]]("outcome", 100)
        self.bucket = TokenBucket(rate, burst)
        self.limiter = RateLimiter(
            bucket=self.bucket,
            send_rx=send_rx,
            dispatch_tx=dispatch_tx,
            outcome_tx=outcome_tx,
            control=self.control,
            now_ms=trio_ms,
            max_batch=max_batch,
        )
        self.passed: list[tuple[float, int]] = []

    async def consume(self) -> None:
        async for batch in self.dispatch_rx:
            self.passed.extend((trio.current_time(), item.request_id) for item in batch)

    def outcomes(self) -> list[Outcome]:
        """Every outcome the limiter sent so far, in order, whatever its grouping."""
        outcomes: list[Outcome] = []
        while True:
            try:
                outcomes.extend(self.outcome_rx.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return outcomes


async def test_releases_at_exactly_the_configured_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(rate=10, burst=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, 31):
            rig.send_tx.send_nowait(email(i))
        await rig.send_tx.aclose()
    times = [t for t, _ in rig.passed]
    # The bucket starts full (burst 1): the first goes at 0, then one every 100 ms.
    assert len(times) == 30
    assert all(abs(t - 0.1 * k) < 1e-9 for k, t in enumerate(times)), times
    assert [i for _, i in rig.passed] == list(range(1, 31))


async def test_cancelled_topic_is_dropped_without_a_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(rate=1, burst=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        rig.send_tx.send_nowait(email(1, "keep"))  # takes the one token at t=0
        rig.send_tx.send_nowait(email(2, "drop"))  # waits for a token until t=1 ...
        rig.send_tx.send_nowait(email(3, "drop"))
        rig.send_tx.send_nowait(email(4, "keep"))
        await trio.sleep(0.5)
        mark, kept = rig.control.cancel_topic_in_memory("drop", up_to_id=3)  # ... interrupted
        rig.control.cancelled.confirm(mark)  # at 0.5, and the store recorded the cancellation
        assert kept == []
        await rig.send_tx.aclose()
    assert rig.passed == [(0, 1), (1.0, 4)]
    outcomes = rig.outcomes()
    assert outcomes == [Stopped(2), Stopped(3)]
    assert rig.bucket.statistics().acquired_total == 2


async def test_emails_accepted_after_a_cancel_still_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    rig.control.cancelled.confirm(rig.control.cancel_topic_in_memory("t", up_to_id=5)[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        rig.send_tx.send_nowait(email(5))
        rig.send_tx.send_nowait(email(6))
        await rig.send_tx.aclose()
    assert [i for _, i in rig.passed] == [6]


async def test_stop_defers_what_is_still_queued(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig(rate=1, burst=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, 6):
            rig.send_tx.send_nowait(email(i))
        await trio.sleep(1.5)  # 1 at t=0, 2 at t=1; 3 waits for its token
        rig.control.begin_stop()
        await rig.send_tx.aclose()
    assert [i for _, i in rig.passed] == [1, 2]
    deferred = rig.outcomes()
    assert all(isinstance(d, Deferred) for d in deferred)
    assert [d.request_id for d in deferred] == [3, 4, 5]
    assert trio.current_time() == 1.5


async def test_waits_while_the_gate_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig(rate=100, burst=1)
    rig.control.gate.pause("SendingPausedException")
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        rig.send_tx.send_nowait(email(1))
        await trio.sleep(60)
        assert rig.passed == []
        rig.control.gate.resume()
        await rig.send_tx.aclose()
    assert rig.passed == [(60, 1)]


class BatchRig(Rig):
    """A rig whose limiter groups up to ``max_batch`` waiting emails per batch."""

    def __init__(self, rate: float, burst: float, max_batch: int) -> None:
        super().__init__(rate=rate, burst=burst, max_batch=max_batch)
        self.batches: list[tuple[float, list[int]]] = []

    async def consume(self) -> None:
        async for batch in self.dispatch_rx:
            self.batches.append((trio.current_time(), [item.request_id for item in batch]))


async def test_a_batch_takes_its_tokens_at_once_and_never_beats_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=10, burst=5, max_batch=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, 24):
            rig.send_tx.send_nowait(email(i))
        await rig.send_tx.aclose()
    # The bucket starts full: 5 at 0; then each batch of 5 waits 0.5 s for its tokens, and the
    # last 3 (all that is left) 0.3 s.
    assert [t for t, _ in rig.batches] == pytest.approx([0.0, 0.5, 1.0, 1.5, 1.8])
    assert [ids for _, ids in rig.batches] == [
        [1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10],
        [11, 12, 13, 14, 15],
        [16, 17, 18, 19, 20],
        [21, 22, 23],
    ]
    assert rig.bucket.statistics().acquired_total == 23
    assert rig.limiter.statistics().batches == 5


async def test_a_batch_holds_only_what_is_already_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=100, burst=50, max_batch=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        rig.send_tx.send_nowait(email(1))
        await trio.sleep(1)
        for i in range(2, 5):
            rig.send_tx.send_nowait(email(i))
        await rig.send_tx.aclose()
    assert rig.batches == [(0, [1]), (1, [2, 3, 4])]


async def test_cancelling_part_of_a_waiting_batch_drops_only_that_part_without_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=1, burst=3, max_batch=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i, topic in enumerate(("keep", "keep", "keep", "drop", "keep", "drop"), start=1):
            rig.send_tx.send_nowait(email(i, topic))
        await trio.sleep(1)  # 1-3 took the 3 tokens at 0; 4-6 wait for 3 more (until t=3) ...
        mark, _ = rig.control.cancel_topic_in_memory("drop", up_to_id=6)  # ... interrupted
        rig.control.cancelled.confirm(mark)
        await rig.send_tx.aclose()
    # Email 5 alone needs one token, which exists at t=1 already.
    assert rig.batches == [(0, [1, 2, 3]), (1, [5])]
    assert rig.outcomes() == [Stopped(4), Stopped(6)]
    assert rig.bucket.statistics().acquired_total == 4


async def test_a_cancel_of_another_topic_does_not_disturb_a_waiting_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=1, burst=2, max_batch=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, 5):
            rig.send_tx.send_nowait(email(i))
        await trio.sleep(0.5)
        rig.control.cancelled.confirm(rig.control.cancel_topic_in_memory("other", 10)[0])
        await rig.send_tx.aclose()
    assert rig.batches == [(0, [1, 2]), (2, [3, 4])]
    assert rig.outcomes() == []


async def test_stop_defers_the_waiting_batch_and_what_is_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = BatchRig(rate=1, burst=2, max_batch=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        for i in range(1, 6):
            rig.send_tx.send_nowait(email(i))
        await trio.sleep(1)
        rig.control.begin_stop()
        await rig.send_tx.aclose()
    assert rig.batches == [(0, [1, 2])]
    assert [(type(o), o.request_id) for o in rig.outcomes()] == [(Deferred, i) for i in (3, 4, 5)]
    assert rig.bucket.statistics().acquired_total == 2


async def test_a_batch_larger_than_the_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be between 1 and the bucket's burst"):
        RateLimiter(
            bucket=TokenBucket(10, 4),
            send_rx=open_pipe[ClaimedEmail]("send", 1)[1],
            dispatch_tx=open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)[0],
            outcome_tx=open_pipe[Sequence[Outcome]]("outcome", 1)[0],
            control=PipelineControl(),
            now_ms=trio_ms,
            max_batch=5,
        )


async def test_a_held_topic_is_deferred_without_a_token_and_the_rest_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reputation guard held a topic: its emails still in the pipe (and in the batch waiting
    for tokens) go back to the queue as Deferred, untouched; the other topics keep their pace."""
    rig = Rig(rate=1, burst=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.limiter.run)
        nursery.start_soon(rig.consume)
        rig.send_tx.send_nowait(email(1, "good"))  # takes the one token at t=0
        rig.send_tx.send_nowait(email(2, "bad"))  # waits for a token until t=1 ...
        rig.send_tx.send_nowait(email(3, "bad"))
        rig.send_tx.send_nowait(email(4, "good"))
        await trio.sleep(0.5)
        rig.control.hold_topic_in_memory("bad", "bounce rate")  # ... interrupted at 0.5
        await rig.send_tx.aclose()
    assert rig.passed == [(0, 1), (1.0, 4)]
    assert rig.outcomes() == [Deferred(2, due_at_ms=500), Deferred(3, due_at_ms=500)]
    assert rig.bucket.statistics().acquired_total == 2
