"""SenderPool: sends batches with ``backend.send_batch`` and turns each email's result into an
outcome.

At most ``max_in_flight`` emails (recipients, not calls) are with the backend at once: a batch
takes room for each of its emails, and gives it back once its outcomes are in the outcome pipe.
A backend that can say how many emails it can usefully hold at once (the SES backend in bulk
mode: ``emails_it_can_hold``) gets no more than that until it answers them, so that what it
cannot start soon waits in the store, not composed in memory (:class:`WeightedSlots`).
Each batch's outcomes go to the post-processor as one item.

Per-email failures are values, not exceptions: a transient error becomes ``Retry`` (or ``Failed``
once attempts run out), a permanent one ``Failed``, a message the service cannot build ``Failed``
as ``config`` (retryable once the configuration is fixed), an account-level one closes the
sending gate and ``Deferred`` the email back to the queue. A whole-call failure arrives as the
same error for each email of the call and so means the same for each. The last check for
cancellation happens right before the hand-over to the backend, in the same synchronous step that
registers the batch's emails as handed over, so ``DELETE /v1/topics/{id}`` never stops an email
that is already on its way, and an email cancelled while its batch waited is not sent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from actors import PipeReceiver, PipeSender
from sesender.backends.base import Backend, OutgoingEmail, SendResult
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)
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
    calls: int
    #: what the backend says it can hold now (None: it sets no limit of its own)
    backend_room: int | None = None


class WeightedSlots:
    """Room for ``total`` emails in flight, taken and given back by the batch; and, when
    ``room`` is given, no more emails *with the backend* than it says at the time (the
    backend's ``emails_it_can_hold``), though always room for one batch when none is.

    An email is with the backend from the moment its room is taken until the backend answers
    it (:meth:`returned`); it stays in flight until its outcome is handed over
    (:meth:`release`). The two differ while outcomes wait for room in the outcome pipe: those
    hold the in-flight limit (a stalled database slows the pipeline to a stop) but not the
    backend's room, so a post-processor writing in bursts does not leave the backend idle.

    Only the pool's receiving loop takes room, so a plain level check and a wake-up event are
    enough: no queue of waiters, no fairness to keep. ``room`` is asked again whenever room is
    given back; it changes as the backend's calls are answered, which give room back.
    """

    def __init__(self, total: int, room: Callable[[], int | None] | None = None) -> None:
        self.total = total
        self.used = 0
        #: of ``used``, emails the backend has answered (their outcomes not handed over yet)
        self.answered = 0
        self._room = room
        self._released = trio.Event()

    def room(self) -> int | None:
        """The backend's room now (None without one)."""
        return None if self._room is None else self._room()

    def _fits(self, count: int) -> bool:
        if self.used + count > self.total:
            return False
        with_backend = self.used - self.answered
        if not with_backend:
            return True
        room = self.room()
        return room is None or with_backend + count <= room

    async def acquire(self, count: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._fits(count):
            await self._released.wait()
        self.used += count

    def returned(self, count: int) -> None:
        """The backend answered ``count`` emails: their room with it is free."""
        self.answered += count
        self._wake()

    def release(self, count: int, *, returned: bool = False) -> None:
        """Give back the room of ``count`` emails: never sent, or (``returned``) answered by
        the backend and their outcomes handed over."""
        if count:
            self.used -= count
            if returned:
                self.answered -= count
            self._wake()

    def _wake(self) -> None:
        self._released.set()
        self._released = trio.Event()


class SenderPool:
    def __init__(
        self,
        *,
        backend: Backend,
        composer: MessageComposer,
        dispatch_rx: PipeReceiver[Sequence[ClaimedEmail]],
        outcome_tx: PipeSender[Sequence[Outcome]],
        control: PipelineControl,
        retry: RetryPolicy,
        max_in_flight: int,
        now_ms: Callable[[], int],
        max_batch: int = 1,
        rng: random.Random | None = None,
        on_send_latency: Callable[[float, int], None] | None = None,
        on_sent: Callable[[int], None] | None = None,
        backend_room: Callable[[], int | None] | None = None,
    ) -> None:
        if not 1 <= max_batch <= max_in_flight:
            raise ValueError(
                f"max_batch must be between 1 and max_in_flight ({max_in_flight}), got {max_batch}"
            )
        self._on_sent = on_sent
        self._backend = backend
        self._composer = composer
        self._dispatch_rx = dispatch_rx
        self._outcome_tx = outcome_tx
        self._control = control
        self._retry = retry
        #: the most emails (not calls) handed to the backend and not yet answered.
        self.max_in_flight = max_in_flight
        #: the largest batch the rate limiter sends: room for it is taken before receiving one.
        self.max_batch = max_batch
        #: ``backend_room``: how many emails the backend can usefully hold at once now (its
        #: ``emails_it_can_hold``); more wait in the store rather than in memory here.
        self._slots = WeightedSlots(max_in_flight, backend_room)
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._on_send_latency = on_send_latency
        self._in_flight = 0
        self._peak = 0
        self._counts = dict.fromkeys(
            ("attempts", "sent", "retried", "failed", "throttled", "deferred", "stopped", "calls"),
            0,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        slots = self._slots
        async with self._dispatch_rx, self._outcome_tx, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                # Room for the largest batch first, so that a batch that got its tokens is taken
                # at once and never parked where cancellation cannot see it; what the batch
                # does not use is given back as soon as its size is known.
                await slots.acquire(self.max_batch)
                try:
                    batch = await self._dispatch_rx.receive()
                except trio.EndOfChannel:
                    slots.release(self.max_batch)
                    break
                except BaseException:
                    slots.release(self.max_batch)
                    raise
                if len(batch) > self.max_batch:
                    slots.release(self.max_batch)
                    raise ValueError(
                        f"a batch of {len(batch)} emails is over max_batch ({self.max_batch})"
                    )
                slots.release(self.max_batch - len(batch))
                nursery.start_soon(self._send_batch, batch)
        # Leaving the nursery waited for every send in flight; closing outcome_tx tells the
        # post-processor that nothing more will come.

    async def _send_batch(self, batch: Sequence[ClaimedEmail]) -> None:
        # The room is given back only once the outcomes are in the outcome pipe: when the
        # database stalls, the pipe fills, the pool stops taking batches and the pipeline slows
        # to a stop instead of piling up finished sends. The backend's room comes back as soon
        # as it answered.
        try:
            try:
                outcomes = await self._attempt(batch)
            finally:
                self._slots.returned(len(batch))
            await self._hand_over(batch, outcomes)
        finally:
            self._slots.release(len(batch), returned=True)

    async def _hand_over(self, batch: Sequence[ClaimedEmail], outcomes: list[Outcome]) -> None:
        """Wait as long as it takes for room in the outcome pipe; only when cancelled (the
        shutdown deadline) try once more, shielded and bounded: the sends happened, and their
        outcomes are the one thing worth a shield."""
        try:
            await self._outcome_tx.send(outcomes)
        except trio.Cancelled:
            with trio.move_on_after(OUTCOME_HANDOFF_TIMEOUT, shield=True) as scope:
                await self._outcome_tx.send(outcomes)
            if scope.cancelled_caught:
                logger.error(
                    "outcomes of requests %s not persisted; they will be sent again after restart",
                    ", ".join(str(email.request_id) for email in batch),
                )
            raise

    async def _attempt(self, batch: Sequence[ClaimedEmail]) -> list[Outcome]:
        """Send what may still be sent of ``batch`` in one ``send_batch`` call; one outcome per
        email. Everything up to the call is one synchronous step: the last check for
        cancellation, composing, and registering the emails as handed over."""
        control = self._control
        counts = self._counts
        outcomes: list[Outcome] = []
        sending: list[ClaimedEmail] = []
        outgoing: list[OutgoingEmail] = []
        now_ms = self._now_ms()
        cancelled = control.cancelled
        check_cancelled = not cancelled.none
        held_topics = control.held_topics
        check_held = not held_topics.none
        hold = control.stop_sending.is_set() or control.gate.is_paused
        compose = self._composer.compose
        for email in batch:
            if check_held and email.topic_id in held_topics:
                counts["deferred"] += 1
                outcomes.append(Deferred(request_id=email.request_id, due_at_ms=now_ms))
            elif check_cancelled and cancelled.is_cancelled(email.topic_id, email.request_id):
                held = control.held_back(email.topic_id, email.request_id, now_ms)
                counts["stopped" if isinstance(held, Stopped) else "deferred"] += 1
                outcomes.append(held)
            elif hold:
                counts["deferred"] += 1
                outcomes.append(Deferred(request_id=email.request_id, due_at_ms=now_ms))
            else:
                try:
                    outgoing.append(compose(email))
                except (ValueError, SendError) as exc:
                    outcomes.append(self._not_composed(email, exc))
                else:
                    sending.append(email)
        if not sending:
            return outcomes
        handed_over = control.handed_over
        for email in sending:
            handed_over[email.request_id] = email.topic_id
        count = len(sending)
        self._in_flight += count
        self._peak = max(self._peak, self._in_flight)
        counts["attempts"] += count
        counts["calls"] += 1
        started = time.perf_counter()
        try:
            results = await self._backend.send_batch(outgoing)
        finally:
            self._in_flight -= count
            if self._on_send_latency is not None:
                self._on_send_latency(time.perf_counter() - started, count)
        sent_before = counts["sent"]
        outcome_of = self._outcome_of
        answered_ms = self._now_ms()
        sent = 0
        append = outcomes.append
        for email, result in zip(sending, results, strict=True):
            if isinstance(result, str):
                # The common case, inline: a message id is Sent, counted once per call.
                append(Sent(email.request_id, result, email.attempts + 1, answered_ms))
                sent += 1
            else:
                append(outcome_of(email, result, answered_ms))
        counts["sent"] += sent
        if self._on_sent is not None and counts["sent"] > sent_before:
            self._on_sent(counts["sent"] - sent_before)
        return outcomes

    def _not_composed(self, email: ClaimedEmail, exc: Exception) -> Failed:
        """The content was validated when it was accepted, so what the composer cannot build
        is the service's side: its configuration (sender, public URL, tracking secret) or a
        defect. ``config`` lets POST /v1/topics/{id}/retry requeue it once that is fixed; no
        attempt was made, so none is counted."""
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

    def _outcome_of(self, email: ClaimedEmail, result: SendResult, answered_ms: int) -> Outcome:
        """What one email's result means: Sent, Retry (or Failed once attempts run out), Failed,
        or Deferred with the sending gate closed. ``answered_ms``: when the call returned."""
        attempts = email.attempts + 1
        if isinstance(result, str):
            self._counts["sent"] += 1
            return Sent(email.request_id, result, attempts, answered_ms)
        if isinstance(result, SenderSendError):
            # The sender's identity: its emails fail one by one as SES refuses them, retryable
            # (POST /v1/topics/{id}/retry) once the identity is verified; other senders go on.
            self._counts["failed"] += 1
            logger.warning(
                "request %d: SES refused its sender %s: %s",
                email.request_id,
                email.content.sender or self._composer.sender,
                result,
                extra={"event": "sender_refused"},
            )
            return Failed(
                request_id=email.request_id,
                error=_describe(result),
                kind=FailureKind.CONFIG,
                attempts=attempts,
            )
        if isinstance(result, PermanentSendError):
            self._counts["failed"] += 1
            logger.debug("request %d failed permanently: %s", email.request_id, result)
            return Failed(
                request_id=email.request_id,
                error=_describe(result),
                kind=FailureKind.PERMANENT,
                attempts=attempts,
            )
        if isinstance(result, AccountSendError):
            return self._pause(email, result, probe_soon=False)
        if isinstance(result, TransientSendError) and result.unreachable:
            return self._pause(email, result, probe_soon=True)
        # Transient, or a SendError of no known kind: retried, within the attempts allowed.
        return self._transient(email, attempts, result)

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

    def _transient(self, email: ClaimedEmail, attempts: int, exc: SendError) -> Outcome:
        if isinstance(exc, TransientSendError) and exc.throttled:
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
            backend_room=self._slots.room(),
            **self._counts,
        )


def _describe(exc: SendError) -> str:
    """The error with its code in front, unless the message already names it."""
    text = str(exc)
    return f"{exc.code}: {text}" if exc.code and exc.code not in text else text
