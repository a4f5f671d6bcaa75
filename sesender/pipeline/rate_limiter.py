"""RateLimiter: lets emails through to the sender pool at ``MAX_SEND_PER_SECOND``, no faster, in
batches that one backend call can carry.

A batch is the next email of the send pipe plus whatever else is already waiting there, up to
``max_batch`` emails (the pipeline makes that ``min(SEND_BURST, 50)``, 50 being SES's bulk limit,
and never more than the in-flight limit). The batch takes one token per email, all at once, from a
smoothly refilled, event-driven token bucket: since a batch never holds more emails than the
bucket's burst, a whole batch going out in one call cannot break the configured rate (at R = 24,
burst 2, batches are of one or two; at R = 5000, burst 500, of up to 50). Every attempt takes its
token (retries come back through the store and the scheduler, so they take tokens too).

Before waiting, the limiter drops the batch's emails of cancelled topics as ``Stopped``
(``Deferred`` while the store has not yet recorded the cancellation, see
:class:`~sesender.pipeline.control.CancelledTopics`); a cancellation that arrives while the batch
waits for its tokens (or for the sending gate) interrupts that wait, the cancelled emails leave
the batch and the rest waits again, so a cancelled email never consumes a token. While the
sending gate is closed (account paused) nothing passes. On graceful shutdown, everything still in
the send pipe, and the batch being assembled, is deferred back to the queue untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from actors import PipeReceiver, PipeSender, TokenBucket
from sesender.models import ClaimedEmail, Deferred, Outcome, Stopped
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.shared_rate import SharedRate

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    passed: int
    stopped: int
    deferred: int
    batches: int


class RateLimiter:
    def __init__(
        self,
        *,
        bucket: TokenBucket,
        send_rx: PipeReceiver[ClaimedEmail],
        dispatch_tx: PipeSender[Sequence[ClaimedEmail]],
        outcome_tx: PipeSender[Sequence[Outcome]],
        control: PipelineControl,
        now_ms: Callable[[], int],
        max_batch: int = 1,
        shared: SharedRate | None = None,
    ) -> None:
        if not 1 <= max_batch <= bucket.burst:
            raise ValueError(
                f"max_batch must be between 1 and the bucket's burst ({bucket.burst:g}),"
                f" got {max_batch}"
            )
        self.bucket = bucket
        self.max_batch = max_batch
        #: with several instances (PostgreSQL): the account's rate, shared by all of them, which
        #: a batch needs on top of this instance's own bucket.
        self.shared = shared
        self._send_rx = send_rx
        self._dispatch_tx = dispatch_tx
        self._outcome_tx = outcome_tx
        self._control = control
        self._now_ms = now_ms
        self._passed = 0
        self._stopped = 0
        self._deferred = 0
        self._batches = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        capacity = self._send_rx.statistics().capacity
        async with self._send_rx, self._dispatch_tx, self._outcome_tx:
            task_status.started()
            async for email in self._send_rx:
                batch = [email]
                self._take_waiting(batch)
                self._control.note_room(
                    capacity - self._send_rx.statistics().depth, taken=len(batch)
                )
                await self._handle(batch)

    def _take_waiting(self, batch: list[ClaimedEmail]) -> None:
        """Add the emails already waiting in the send pipe, up to ``max_batch`` in all."""
        receive_nowait = self._send_rx.receive_nowait
        while len(batch) < self.max_batch:
            try:
                batch.append(receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _handle(self, batch: Sequence[ClaimedEmail]) -> None:
        control = self._control
        batch = await self._without_cancelled(batch)
        while batch:
            if control.stop_sending.is_set():
                await self._defer(batch)
                return
            if control.gate.is_paused:
                await self._wait_interruptibly(batch, control.gate.wait_open)
                batch = await self._without_cancelled(batch)
                continue
            try:
                self.bucket.acquire_nowait(len(batch))  # at full speed: no scope, no wait
            except trio.WouldBlock:
                if await self._wait_interruptibly(batch, partial(self.bucket.acquire, len(batch))):
                    batch = await self._without_cancelled(batch)
                    continue
            if self.shared is not None and await self._wait_interruptibly(
                batch, partial(self.shared.acquire, len(batch))
            ):
                batch = await self._without_cancelled(batch)
                continue
            await self._dispatch_tx.send(batch)
            self._passed += len(batch)
            self._batches += 1
            return

    async def _wait_interruptibly(
        self, batch: Sequence[ClaimedEmail], wait: Callable[[], Awaitable[None]]
    ) -> bool:
        """Wait where a cancellation of one of the batch's emails, or a shutdown, can interrupt
        (see ``PipelineControl.token_wait``); return True when interrupted."""
        control = self._control
        with trio.CancelScope() as scope:
            control.token_wait = (batch, scope)
            try:
                await wait()
            finally:
                control.token_wait = None
        return scope.cancelled_caught

    async def _without_cancelled(self, batch: Sequence[ClaimedEmail]) -> Sequence[ClaimedEmail]:
        """The batch without its emails of cancelled topics, whose outcomes go out now."""
        cancelled = self._control.cancelled
        if cancelled.none:
            return batch
        kept: list[ClaimedEmail] = []
        held: list[Outcome] = []
        now_ms = self._now_ms()
        for email in batch:
            if cancelled.is_cancelled(email.topic_id, email.request_id):
                outcome = self._control.held_back(email.topic_id, email.request_id, now_ms)
                if isinstance(outcome, Stopped):
                    self._stopped += 1
                else:
                    self._deferred += 1
                held.append(outcome)
            else:
                kept.append(email)
        if held:
            await self._outcome_tx.send(held)
        return kept

    async def _defer(self, batch: Sequence[ClaimedEmail]) -> None:
        """Shutting down: back to the queue, attempts not counted."""
        self._deferred += len(batch)
        now_ms = self._now_ms()
        await self._outcome_tx.send(
            [Deferred(request_id=email.request_id, due_at_ms=now_ms) for email in batch]
        )

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            passed=self._passed,
            stopped=self._stopped,
            deferred=self._deferred,
            batches=self._batches,
        )
