"""RateLimiter: lets emails through to the sender pool at ``MAX_SEND_PER_SECOND``, no faster.

Every attempt takes one token of a smoothly refilled, event-driven token bucket (retries come back
through the store and the scheduler, so they take tokens too). Before waiting for a token the
limiter drops emails of cancelled topics as ``Stopped`` (``Deferred`` while the store has not yet
recorded the cancellation, see :class:`~sesender.pipeline.control.CancelledTopics`); a
cancellation that arrives while the head email waits for its token interrupts that wait, so a
cancelled email never consumes a token. While the sending gate is closed (account paused) nothing
passes. On graceful shutdown, everything still in the send pipe is deferred back to the queue
untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors import PipeReceiver, PipeSender, TokenBucket
from sesender.models import ClaimedEmail, Deferred, Outcome, Stopped
from sesender.pipeline.control import PipelineControl

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    passed: int
    stopped: int
    deferred: int


class RateLimiter:
    def __init__(
        self,
        *,
        bucket: TokenBucket,
        send_rx: PipeReceiver[ClaimedEmail],
        dispatch_tx: PipeSender[ClaimedEmail],
        outcome_tx: PipeSender[Outcome],
        control: PipelineControl,
        now_ms: Callable[[], int],
    ) -> None:
        self.bucket = bucket
        self._send_rx = send_rx
        self._dispatch_tx = dispatch_tx
        self._outcome_tx = outcome_tx
        self._control = control
        self._now_ms = now_ms
        self._passed = 0
        self._stopped = 0
        self._deferred = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        capacity = self._send_rx.statistics().capacity
        async with self._send_rx, self._dispatch_tx, self._outcome_tx:
            task_status.started()
            async for email in self._send_rx:
                self._control.note_room(capacity - self._send_rx.statistics().depth)
                await self._handle(email)

    async def _handle(self, email: ClaimedEmail) -> None:
        control = self._control
        if self._is_cancelled(email):
            await self._drop(email)
            return
        if not control.stop_sending.is_set() and control.gate.is_paused:
            with trio.CancelScope() as scope:
                control.token_wait = (email.topic_id, email.request_id, scope)
                try:
                    await control.gate.wait_open()
                finally:
                    control.token_wait = None
        if not control.stop_sending.is_set() and not self._is_cancelled(email):
            try:
                self.bucket.acquire_nowait()  # the common case at full speed: no scope, no wait
            except trio.WouldBlock:
                pass
            else:
                await self._dispatch_tx.send(email)
                self._passed += 1
                return
            with trio.CancelScope() as scope:
                control.token_wait = (email.topic_id, email.request_id, scope)
                try:
                    await self.bucket.acquire()
                finally:
                    control.token_wait = None
            if not scope.cancelled_caught:
                await self._dispatch_tx.send(email)
                self._passed += 1
                return
        if self._is_cancelled(email):
            await self._drop(email)
        else:
            await self._defer(email)

    def _is_cancelled(self, email: ClaimedEmail) -> bool:
        return self._control.cancelled.is_cancelled(email.topic_id, email.request_id)

    async def _drop(self, email: ClaimedEmail) -> None:
        outcome = self._control.held_back(email.topic_id, email.request_id, self._now_ms())
        if isinstance(outcome, Stopped):
            self._stopped += 1
        else:
            self._deferred += 1
        await self._outcome_tx.send(outcome)

    async def _defer(self, email: ClaimedEmail) -> None:
        """Shutting down (or paused and shutting down): back to the queue, attempt not counted."""
        self._deferred += 1
        await self._outcome_tx.send(Deferred(request_id=email.request_id, due_at_ms=self._now_ms()))

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            passed=self._passed, stopped=self._stopped, deferred=self._deferred
        )
