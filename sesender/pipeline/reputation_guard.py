"""ReputationGuard: holds sending before SES would put the account under review.

SES reviews an account at a 5 % bounce rate or a 0.1 % complaint rate and pauses it above 10 % /
0.5 %; a bad list posted to sesender would otherwise go out to the last address while the bounces
come back. The guard watches sesender's own data, over a sliding window of recent sends
(``GUARD_WINDOW_SECONDS``, counted per 10-second bucket by the store's triggers, so an evaluation
is a sum over a few buckets, never a scan of the emails):

- account-wide, once at least ``GUARD_MIN_SENDS`` emails were sent in the window, a permanent
  bounce rate at or above ``GUARD_BOUNCE_RATE`` or a complaint rate at or above
  ``GUARD_COMPLAINT_RATE`` *holds* the sending gate: everything stays queued, nothing fails;
- per topic, once at least ``GUARD_TOPIC_MIN_SENDS`` of its emails were sent in the window, a
  bounce rate at or above ``GUARD_BOUNCE_RATE`` holds that topic: its emails still queued (and
  those already inside the pipeline, which are deferred back) end ``Held``, the rest of the
  account keeps sending.

It evaluates after every recorded bounce or complaint (woken by :meth:`note_event`, at most every
:data:`MIN_GAP` seconds) and every ``GUARD_CHECK_SECONDS``; each evaluation also applies the holds
the store records (and drops those it no longer has), so with several instances on one
PostgreSQL database a hold, or an operator's resume, on one reaches the others by their next
evaluation. A hold is recorded in the store before
it is announced, and outlives restarts: only an operator lifts it (``POST /v1/sending/resume``,
``POST /v1/topics/{id}/resume``), and the window then starts again after the resume, so the
bounces that caused the hold do not cause it again. Holds are logged at ERROR (so Sentry sees
them) with ``event`` ``sending_held`` / ``topic_held``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from sesender.config import GuardConfig
from sesender.errors import StoreError
from sesender.models import GuardCounts, HoldScope, ReputationCounts
from sesender.pipeline.control import PipelineControl, Wakeup
from sesender.store.base import ReputationStore

logger = logging.getLogger(__name__)

#: The least time between two evaluations: a burst of bounce notifications costs one sum over
#: the window per half second, not one per notification.
MIN_GAP = 0.5

#: SES event types after which the rates may have moved.
WAKING_EVENTS = frozenset({"Bounce", "Complaint"})


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    enabled: bool
    evaluations: int
    #: The account-wide counts at the last evaluation (None before the first).
    account: GuardCounts | None
    held_topics: dict[str, str]
    account_held: bool
    account_hold_reason: str
    topic_holds_total: int
    account_holds_total: int


class ReputationGuard:
    def __init__(
        self,
        *,
        store: ReputationStore,
        control: PipelineControl,
        settings: GuardConfig,
        now_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._control = control
        self._settings = settings
        self._now_ms = now_ms
        self._wakeup = Wakeup()
        self._evaluations = 0
        self._account: GuardCounts | None = None
        self._topic_holds = 0
        self._account_holds = 0
        #: Holds in force in memory whose store record failed: recorded again next time.
        self._unrecorded: dict[str, str] = {}
        self._account_unrecorded: str | None = None
        #: Evaluations and an operator's resumes take turns: a resume between an evaluation's
        #: read of the recorded holds and its use of them would be undone in memory.
        self._lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the holds in force first (started only then, so the pipeline, started after,
        never sends an email of a held topic or account), then evaluate on wake-ups and ticks."""
        await self.load()
        task_status.started()
        while True:
            with trio.move_on_after(self._settings.check_interval):
                await self._wakeup.wait()
            self._wakeup.clear()
            if self._settings.enabled:
                try:
                    await self.evaluate()
                except StoreError as exc:
                    # The database is waited out, as everywhere else (docs/architecture.md,
                    # "Faults that are waited out"): the next evaluation tries again; holds
                    # already decided stay in force in memory.
                    logger.warning(
                        "the reputation guard could not read or record its counters: %s",
                        exc,
                        extra={"event": "guard_store_error"},
                    )
            await trio.sleep(MIN_GAP)

    async def load(self) -> None:
        for hold in await self._store.reputation_holds():
            if hold.scope is HoldScope.ACCOUNT:
                self._control.gate.hold(hold.reason)
                logger.error(
                    "sending is held by the reputation guard since an earlier run: %s; resume"
                    " with POST /v1/sending/resume",
                    hold.reason,
                    extra={"event": "sending_held", "reason": hold.reason},
                )
            else:
                self._control.held_topics.hold(hold.topic_id, hold.reason)
        if len(self._control.held_topics):
            logger.warning(
                "%d topics are held by the reputation guard",
                len(self._control.held_topics),
                extra={
                    "event": "topics_held",
                    "topics": sorted(self._control.held_topics.reasons()),
                },
            )

    def note_event(self, event_type: str) -> None:
        """An SES event was recorded (called by the feedback intake; sync and cheap)."""
        if event_type in WAKING_EVENTS:
            self._wakeup.set()

    async def evaluate(self) -> ReputationCounts:
        """Sum the window and hold what crossed a threshold; return the counts."""
        async with self._lock:
            return await self._evaluate()

    async def _evaluate(self) -> ReputationCounts:
        settings = self._settings
        now_ms = self._now_ms()
        counts = await self._store.reputation_counts(since_ms=now_ms - int(settings.window * 1000))
        self._evaluations += 1
        self._account = counts.account
        await self._record_unrecorded(now_ms)
        await self._follow_recorded_holds()
        account = counts.account
        if not self._control.gate.held and account.sends >= settings.min_sends:
            reason = None
            if account.bounce_rate >= settings.bounce_rate:
                reason = (
                    f"account bounce rate {account.bounce_rate:.2%} ({account.bounces} of"
                    f" {account.sends} sends) reached GUARD_BOUNCE_RATE {settings.bounce_rate:.2%}"
                )
            elif account.complaint_rate >= settings.complaint_rate:
                reason = (
                    f"account complaint rate {account.complaint_rate:.3%} ({account.complaints}"
                    f" of {account.sends} sends) reached GUARD_COMPLAINT_RATE"
                    f" {settings.complaint_rate:.3%}"
                )
            if reason is not None:
                await self._hold_account(reason, now_ms)
        held = self._control.held_topics
        for topic_id, topic in counts.topics.items():
            if topic_id in held or topic.sends < settings.topic_min_sends:
                continue
            if topic.bounce_rate >= settings.bounce_rate:
                reason = (
                    f"topic bounce rate {topic.bounce_rate:.2%} ({topic.bounces} of"
                    f" {topic.sends} sends) reached GUARD_BOUNCE_RATE {settings.bounce_rate:.2%}"
                )
                await self._hold_topic(topic_id, reason, now_ms)
        return counts

    async def _hold_account(self, reason: str, now_ms: int) -> None:
        # In memory first: from this instant nothing more is handed over.
        if not self._control.gate.hold(reason):
            return
        self._account_holds += 1
        try:
            await self._store.hold_account(reason=reason, now_ms=now_ms)
        except StoreError as exc:
            self._account_unrecorded = reason
            logger.error("could not record the account hold (kept in memory): %s", exc)
        logger.error(
            "sending held by the reputation guard: %s; emails stay queued until an operator"
            " resumes (POST /v1/sending/resume)",
            reason,
            extra={"event": "sending_held", "reason": reason},
        )

    async def _hold_topic(self, topic_id: str, reason: str, now_ms: int) -> None:
        self._control.hold_topic_in_memory(topic_id, reason)
        self._topic_holds += 1
        held = 0
        try:
            held = await self._store.hold_topic(topic_id, reason=reason, now_ms=now_ms)
        except StoreError as exc:
            self._unrecorded[topic_id] = reason
            logger.error("could not record the hold of a topic (kept in memory): %s", exc)
        logger.error(
            "topic %r held by the reputation guard: %s; %d queued emails held until an operator"
            " resumes it (POST /v1/topics/{topic_id}/resume)",
            topic_id,
            reason,
            max(held, 0),
            extra={"event": "topic_held", "topic_id": topic_id, "reason": reason},
        )

    async def _record_unrecorded(self, now_ms: int) -> None:
        if self._account_unrecorded is not None and self._control.gate.held:
            await self._store.hold_account(reason=self._account_unrecorded, now_ms=now_ms)
            self._account_unrecorded = None
        for topic_id, reason in list(self._unrecorded.items()):
            if topic_id in self._control.held_topics:
                await self._store.hold_topic(topic_id, reason=reason, now_ms=now_ms)
            del self._unrecorded[topic_id]

    async def _follow_recorded_holds(self) -> None:
        """Apply the holds the store has and this process does not, and lift those it lifted:
        with several instances on one database (PostgreSQL), a hold decided or resumed on one
        instance reaches the others at their next evaluation."""
        recorded = await self._store.reputation_holds()
        control = self._control
        account = [hold for hold in recorded if hold.scope is HoldScope.ACCOUNT]
        topics = {hold.topic_id: hold.reason for hold in recorded if hold.scope is HoldScope.TOPIC}
        gate = control.gate
        if account and not gate.held:
            gate.hold(account[0].reason)
            logger.error(
                "sending held by the reputation guard (recorded by another instance): %s",
                account[0].reason,
                extra={"event": "sending_held", "reason": account[0].reason},
            )
        elif not account and gate.held and self._account_unrecorded is None:
            gate.release()
            logger.warning(
                "sending resumed (by an operator, on another instance)",
                extra={"event": "sending_resumed", "by": "operator"},
            )
            control.wake_scheduler()
        held = control.held_topics
        for topic_id, reason in topics.items():
            if topic_id not in held:
                control.hold_topic_in_memory(topic_id, reason)
        for topic_id in held.reasons():
            if topic_id not in topics and topic_id not in self._unrecorded:
                held.release(topic_id)
                control.wake_scheduler()

    # -- an operator's decisions (the HTTP API) --------------------------------------------

    async def resume_account(self) -> bool:
        """Lift the account hold (store first, then the gate); False when there was none."""
        async with self._lock:
            return await self._resume_account()

    async def _resume_account(self) -> bool:
        recorded = await self._store.resume_account(now_ms=self._now_ms())
        self._account_unrecorded = None
        released = self._control.gate.release()
        if recorded or released:
            logger.warning(
                "sending resumed by an operator",
                extra={"event": "sending_resumed", "by": "operator"},
            )
            self._control.wake_scheduler()
        return recorded or released

    async def resume_topic(self, topic_id: str) -> int | None:
        """Lift the topic's hold and requeue its held emails; how many, None if not held."""
        async with self._lock:
            return await self._resume_topic(topic_id)

    async def _resume_topic(self, topic_id: str) -> int | None:
        released = await self._store.resume_topic(topic_id, now_ms=self._now_ms())
        self._unrecorded.pop(topic_id, None)
        in_memory = self._control.held_topics.release(topic_id)
        if released is None and not in_memory:
            return None
        logger.warning(
            "topic %r resumed by an operator; %d held emails queued again",
            topic_id,
            released or 0,
            extra={"event": "topic_resumed", "topic_id": topic_id, "count": released or 0},
        )
        self._control.wake_scheduler()
        return released or 0

    def statistics(self) -> GuardStatistics:
        gate = self._control.gate.statistics()
        return GuardStatistics(
            enabled=self._settings.enabled,
            evaluations=self._evaluations,
            account=self._account,
            held_topics=self._control.held_topics.reasons(),
            account_held=gate.held,
            account_hold_reason=gate.hold_reason,
            topic_holds_total=self._topic_holds,
            account_holds_total=self._account_holds,
        )
