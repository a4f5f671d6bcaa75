"""SenderPool: runs up to ``max_in_flight`` sends at once and turns each result into an outcome.

Per-email failures are values, not exceptions: a transient error becomes ``Retry`` (or ``Failed``
once attempts run out), a permanent one ``Failed``, a message the service cannot build ``Failed``
as ``config`` (retryable once the configuration is fixed), an account-level one closes the
sending gate and ``Deferred`` the email back to the queue. The last check for cancellation
happens right before the hand-over to the backend, in the same synchronous step that registers
the email as handed over, so ``DELETE /v1/topics/{id}`` never stops an email that is already on
its way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors import PipeReceiver, PipeSender
from sesender.backends.base import Backend
from sesender.errors import AccountSendError, PermanentSendError, SendError, TransientSendError
from sesender.models import (
    ClaimedEmail,
    Deferred,
    Failed,
    FailureKind,
    Outcome,
    Retry,
    Sent,
    Stopped,
)
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.retry import RetryPolicy

logger = logging.getLogger(__name__)

#: How long persisting one outcome may hold up cancellation of the pool: a shield must be bounded,
#: or one stuck database write would hold the shutdown deadline forever.
OUTCOME_HANDOFF_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class SenderPoolStatistics:
    max_in_flight: int
    in_flight: int
    peak_in_flight: int
    attempts: int
    sent: int
    retried: int
    failed: int
    throttled: int
    deferred: int
    stopped: int


class SenderPool:
    def __init__(
        self,
        *,
        backend: Backend,
        composer: MessageComposer,
        dispatch_rx: PipeReceiver[ClaimedEmail],
        outcome_tx: PipeSender[Outcome],
        control: PipelineControl,
        retry: RetryPolicy,
        max_in_flight: int,
        now_ms: Callable[[], int],
        rng: random.Random | None = None,
        on_send_latency: Callable[[float], None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self._on_sent = on_sent
        self._backend = backend
        self._composer = composer
        self._dispatch_rx = dispatch_rx
        self._outcome_tx = outcome_tx
        self._control = control
        self._retry = retry
        self.max_in_flight = max_in_flight
        self._slots = trio.Semaphore(max_in_flight)
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._on_send_latency = on_send_latency
        self._in_flight = 0
        self._peak = 0
        self._counts = dict.fromkeys(
            ("attempts", "sent", "retried", "failed", "throttled", "deferred", "stopped"), 0
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._dispatch_rx, self._outcome_tx, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await self._slots.acquire()
                try:
                    email = await self._dispatch_rx.receive()
                except trio.EndOfChannel:
                    self._slots.release()
                    break
                except BaseException:
                    self._slots.release()
                    raise
                nursery.start_soon(self._send_one, email)
        # Leaving the nursery waited for every send in flight; closing outcome_tx tells the
        # post-processor that nothing more will come.

    async def _send_one(self, email: ClaimedEmail) -> None:
        # The slot is released only once the outcome is in the outcome pipe: when the database
        # stalls, the pipe fills, the pool stops taking emails and the pipeline slows to a stop
        # instead of piling up finished sends.
        try:
            outcome = await self._attempt(email)
            await self._hand_over(email, outcome)
        finally:
            self._slots.release()

    async def _hand_over(self, email: ClaimedEmail, outcome: Outcome) -> None:
        """Wait as long as it takes for room in the outcome pipe; only when cancelled (the
        shutdown deadline) try once more, shielded and bounded: the send happened, and its
        outcome is the one thing worth a shield."""
        try:
            await self._outcome_tx.send(outcome)
        except trio.Cancelled:
            with trio.move_on_after(OUTCOME_HANDOFF_TIMEOUT, shield=True) as scope:
                await self._outcome_tx.send(outcome)
            if scope.cancelled_caught:
                logger.error(
                    "outcome of request %d not persisted; it will be sent again after restart",
                    email.request_id,
                )
            raise

    async def _attempt(self, email: ClaimedEmail) -> Outcome:
        control = self._control
        if control.cancelled.is_cancelled(email.topic_id, email.request_id):
            held = control.held_back(email.topic_id, email.request_id, self._now_ms())
            self._counts["stopped" if isinstance(held, Stopped) else "deferred"] += 1
            return held
        if control.stop_sending.is_set() or control.gate.is_paused:
            self._counts["deferred"] += 1
            return Deferred(request_id=email.request_id, due_at_ms=self._now_ms())
        try:
            outgoing = self._composer.compose(email)
        except (ValueError, SendError) as exc:
            # The content was validated when it was accepted, so what the composer cannot build
            # is the service's side: its configuration (sender, public URL, tracking secret) or
            # a defect. ``config`` lets POST /v1/topics/{id}/retry requeue it once that is fixed;
            # no attempt was made, so none is counted.
            self._counts["failed"] += 1
            logger.error(
                "could not compose request %d: %s",
                email.request_id,
                exc,
                extra={"event": "compose_failed"},
            )
            return Failed(
                request_id=email.request_id,
                error=f"could not compose message: {exc}",
                kind=FailureKind.CONFIG,
                attempts=email.attempts,
            )
        attempts = email.attempts + 1
        control.handed_over[email.request_id] = email.topic_id
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        self._counts["attempts"] += 1
        started = time.perf_counter()
        try:
            message_id = await self._backend.send(outgoing)
        except TransientSendError as exc:
            if exc.unreachable:
                return self._pause(email, exc, probe_soon=True)
            return self._transient(email, attempts, exc)
        except PermanentSendError as exc:
            self._counts["failed"] += 1
            logger.debug("request %d failed permanently: %s", email.request_id, exc)
            return Failed(
                request_id=email.request_id,
                error=_describe(exc),
                kind=FailureKind.PERMANENT,
                attempts=attempts,
            )
        except AccountSendError as exc:
            return self._pause(email, exc, probe_soon=False)
        finally:
            self._in_flight -= 1
            if self._on_send_latency is not None:
                self._on_send_latency(time.perf_counter() - started)
        self._counts["sent"] += 1
        if self._on_sent is not None:
            self._on_sent()
        return Sent(
            request_id=email.request_id,
            message_id=message_id,
            attempts=attempts,
            sent_at_ms=self._now_ms(),
        )

    def _pause(self, email: ClaimedEmail, exc: SendError, *, probe_soon: bool) -> Outcome:
        """Close the sending gate (account paused, or provider unreachable) and defer the email
        back to the queue without counting the attempt: nothing fails while it lasts."""
        self._counts["deferred"] += 1
        reason = _describe(exc)
        if self._control.gate.pause(reason, probe_soon=probe_soon):
            logger.error(
                "sending paused: %s; emails stay queued until it clears",
                reason,
                extra={"event": "sending_paused", "reason": reason},
            )
        return Deferred(request_id=email.request_id, due_at_ms=self._now_ms())

    def _transient(self, email: ClaimedEmail, attempts: int, exc: TransientSendError) -> Outcome:
        if exc.throttled:
            self._counts["throttled"] += 1
        if not self._retry.can_retry(attempts):
            self._counts["failed"] += 1
            return Failed(
                request_id=email.request_id,
                error=f"gave up after {attempts} attempts: {_describe(exc)}",
                kind=FailureKind.EXHAUSTED,
                attempts=attempts,
            )
        self._counts["retried"] += 1
        delay_ms = int(self._retry.delay(attempts, self._rng) * 1000)
        return Retry(
            request_id=email.request_id,
            error=_describe(exc),
            attempts=attempts,
            due_at_ms=self._now_ms() + delay_ms,
        )

    def statistics(self) -> SenderPoolStatistics:
        return SenderPoolStatistics(
            max_in_flight=self.max_in_flight,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            **self._counts,
        )


def _describe(exc: SendError) -> str:
    """The error with its code in front, unless the message already names it."""
    text = str(exc)
    return f"{exc.code}: {text}" if exc.code and exc.code not in text else text
