"""Pipeline: builds the four send actors and their pipes, and is the HTTP layer's handle on them.

The graph (capacities from configuration)::

    Scheduler --send(SEND_CHANNEL_SIZE)--> RateLimiter --dispatch(0)--> SenderPool
                                               |                            |
                                               +--outcome(POST_CHANNEL_SIZE)+--> PostProcessor

The send pipe carries emails; the dispatch and outcome pipes carry batches: the rate limiter
groups what is waiting into batches of at most :func:`batch_size` emails and grants each its
tokens at once, the sender pool hands each batch to the backend in one ``send_batch`` call, and
the post-processor receives each batch's outcomes as one item. So the event loop pays its
hand-offs per batch, not per email. The outcome pipe's capacity in batches is chosen so that it
holds about ``POST_CHANNEL_SIZE`` outcomes.

The dispatch pipe is a rendezvous: the sender pool takes a batch only when it has room for it,
so a batch that got its tokens is never parked where cancellation cannot see it. The
AccountMonitor sits beside the graph and only opens and closes the sending gate; the
ReputationGuard (started first, as it loads the holds in force) holds the gate or single topics
(``PipelineControl.held_topics``) when bounce or complaint rates cross their thresholds.

Shutdown drains by end of channel: ``begin_stop`` makes the scheduler stop claiming and close its
pipe; the rate limiter defers what is left in memory back to the queue and closes its pipes; the
sender pool waits for sends in flight and closes the outcome pipe; the post-processor flushes and
returns. ``wait_drained`` returns when the post-processor has returned.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from actors import PipeStatistics, Supervisor, TokenBucket, open_pipe
from sesender.backends.base import Backend, LimitsItsBacklog
from sesender.config import GuardConfig, PipelineConfig
from sesender.models import ClaimedEmail, Outcome
from sesender.pipeline.account_monitor import AccountMonitor
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.control import GateStatistics, PipelineControl
from sesender.pipeline.post_processor import PostProcessor
from sesender.pipeline.rate_history import SendRateHistory
from sesender.pipeline.rate_limiter import RateLimiter
from sesender.pipeline.reputation_guard import ReputationGuard
from sesender.pipeline.retry import RetryPolicy
from sesender.pipeline.scheduler import Scheduler
from sesender.pipeline.sender_pool import SenderPool
from sesender.pipeline.shared_rate import SharedRate
from sesender.store.base import QueueStore, ReputationStore

#: The most emails in one batch, whatever the rate: SES's ``SendBulkEmail`` takes at most 50
#: destinations per call.
MAX_BATCH = 50

#: The actor names, in start order (downstream first, so nothing sends into an unstarted actor).
ACTOR_NAMES = ("post-processor", "sender-pool", "rate-limiter", "scheduler", "account-monitor")
#: Started before all of them (it loads the holds in force), when the pipeline has a guard.
GUARD_ACTOR = "reputation-guard"


def batch_size(settings: PipelineConfig) -> int:
    """The most emails in one batch: no more than the bucket's burst (so a batch sent in one
    call cannot break the configured rate), than one bulk call takes, or than may be in flight."""
    return max(1, min(int(settings.burst), MAX_BATCH, settings.in_flight_limit()))


class PipelineObserver(Protocol):
    """What the pipeline reports as it works (metrics implement it); every method is sync and
    cheap, called on the trio thread."""

    def outcomes_persisted(self, outcomes: Sequence[Outcome]) -> None: ...

    def emails_stopped(self, count: int) -> None: ...

    def emails_suppressed(self, count: int) -> None: ...

    def send_latency(self, seconds: float, emails: int) -> None:
        """Once per backend call: its duration, and how many emails it carried (the histogram
        counts emails)."""


class Pipeline:
    def __init__(
        self,
        *,
        store: QueueStore,
        backend: Backend,
        composer: MessageComposer,
        settings: PipelineConfig,
        now_ms: Callable[[], int],
        rng: random.Random | None = None,
        observer: PipelineObserver | None = None,
        shared_rate: Callable[[TokenBucket], SharedRate] | None = None,
        reputation: ReputationStore | None = None,
        guard_settings: GuardConfig | None = None,
    ) -> None:
        self.control = PipelineControl()
        self._observer = observer
        self.rate_history = SendRateHistory(now_ms=now_ms)
        self._store = store
        self._now_ms = now_ms
        self.batch_size = batch_size(settings)
        send_tx, send_rx = open_pipe[ClaimedEmail]("send", settings.send_channel_size)
        dispatch_tx, dispatch_rx = open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)
        outcome_tx, outcome_rx = open_pipe[Sequence[Outcome]](
            "outcome", max(1, settings.post_channel_size // self.batch_size)
        )
        self.pipes = (send_tx, dispatch_tx, outcome_tx)
        self.bucket = TokenBucket(settings.max_send_per_second, settings.burst)
        self.scheduler = Scheduler(
            store=store,
            send_tx=send_tx,
            control=self.control,
            interval=settings.scheduler_interval,
            now_ms=now_ms,
            on_suppressed=observer.emails_suppressed if observer else None,
            on_stopped=observer.emails_stopped if observer else None,
        )
        self.rate_limiter = RateLimiter(
            bucket=self.bucket,
            send_rx=send_rx,
            dispatch_tx=dispatch_tx,
            outcome_tx=outcome_tx.clone(),
            control=self.control,
            now_ms=now_ms,
            max_batch=self.batch_size,
            shared=shared_rate(self.bucket) if shared_rate is not None else None,
        )
        self.sender_pool = SenderPool(
            backend=backend,
            composer=composer,
            dispatch_rx=dispatch_rx,
            outcome_tx=outcome_tx,
            control=self.control,
            retry=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_delay=settings.retry_base_delay,
                max_delay=settings.retry_max_delay,
            ),
            max_in_flight=settings.in_flight_limit(),
            now_ms=now_ms,
            max_batch=self.batch_size,
            rng=rng,
            on_send_latency=observer.send_latency if observer else None,
            on_sent=self.rate_history.record,
            backend_room=(
                backend.emails_it_can_hold if isinstance(backend, LimitsItsBacklog) else None
            ),
        )
        self.post_processor = PostProcessor(
            store=store,
            outcome_rx=outcome_rx,
            control=self.control,
            now_ms=now_ms,
            flush_size=settings.flush_size,
            flush_interval=settings.flush_interval,
            on_flush=observer.outcomes_persisted if observer else None,
        )
        self.account_monitor = AccountMonitor(
            backend=backend,
            control=self.control,
            bucket=self.bucket,
            probe_interval=settings.pause_probe_interval,
            cap_to_account_rate=settings.cap_to_account_rate,
            poll_interval=settings.account_poll_interval,
        )
        #: The reputation guard, when the pipeline was given its store.
        self.guard = (
            ReputationGuard(
                store=reputation,
                control=self.control,
                settings=guard_settings or GuardConfig(),
                now_ms=now_ms,
            )
            if reputation is not None
            else None
        )
        self._drained = trio.Event()

    async def start(self, supervisor: Supervisor) -> None:
        """Load the recorded cancellations, then start every actor under ``supervisor``,
        downstream first (so the in-memory checks agree with the store from the first email)."""
        for topic_id, up_to_id in (await self._store.cancellations()).items():
            self.control.cancelled.cancel(topic_id, up_to_id)
        if self.guard is not None:
            await supervisor.start(GUARD_ACTOR, self.guard.run)
        await supervisor.start("post-processor", self._run_post_processor)
        await supervisor.start("sender-pool", self.sender_pool.run)
        await supervisor.start("rate-limiter", self.rate_limiter.run)
        await supervisor.start("scheduler", self.scheduler.run)
        await supervisor.start("account-monitor", self.account_monitor.run)

    async def _run_post_processor(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.post_processor.run(task_status=task_status)
        finally:
            self._drained.set()

    # -- the HTTP layer's handle -----------------------------------------------------------

    def notify_submitted(self) -> None:
        """New immediate emails are stored: claim them now rather than at the next poll."""
        self.control.wake_scheduler()

    async def cancel_topic(self, topic_id: str) -> int:
        """Stop every email of the topic accepted so far that has not been handed over yet.

        The in-memory mark comes first (from then on nothing of the topic is handed over), the
        store records the cancellation next; the mark is confirmed only once the store has
        committed, and withdrawn when it failed (the error, e.g. ``StoreUnavailable``, goes to
        the caller), so the running pipeline never keeps a cancellation the database lacks.
        """
        up_to_id = await self._store.max_request_id()
        mark, keep = self.control.cancel_topic_in_memory(topic_id, up_to_id)
        try:
            result = await self._store.stop_topic(
                topic_id, up_to_id=up_to_id, keep=keep, now_ms=self._now_ms()
            )
        except BaseException:
            self.control.cancelled.withdraw(mark)
            raise
        self.control.cancelled.confirm(mark)
        if self._observer is not None:
            self._observer.emails_stopped(result.stopped)
        return result.stopped

    def begin_stop(self) -> None:
        self.control.begin_stop()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    @property
    def draining(self) -> bool:
        return self.control.stop_sending.is_set()

    def gate_statistics(self) -> GateStatistics:
        return self.control.gate.statistics()

    def pipe_statistics(self) -> tuple[PipeStatistics, ...]:
        return tuple(pipe.statistics() for pipe in self.pipes)
