"""WebhookDeliverer: the supervised actor that delivers queued webhook events.

Shape, per enabled endpoint (a *lane*):

* a claimer leases due events of that endpoint from the store (``claim_webhook_events``) whenever
  the lane has room, and puts them on the lane's bounded channel;
* ``concurrency`` posters take events off the channel and POST them (:class:`WebhookPoster`);
* every attempt's result goes, with its decision (:func:`~sesender.webhooks.retry.decide`), to one
  recorder for the whole actor, which writes results in batches (one transaction per batch).

So one slow or dead endpoint fills only its own lane: its posters wait on its timeouts, its claimer
stops claiming, and nothing else waits for it: not the other lanes, and not sending (which never
waits for webhooks at all: the events are rows its own transactions wrote). A lane holds at most
``2 x concurrency`` leased events; the lease outlasts the time they can take (two timeouts plus a
margin), so a crashed deliverer's events are claimable again soon, and a live one's never are.

Every ``poll_interval`` the actor re-reads the enabled endpoints: new ones get a lane, disabled or
deleted ones lose theirs, a changed URL restarts the lane, a rotated secret is used at once.

At-least-once: results are recorded after the POST; a crash between the two delivers the event
again, with the same event id. On cancellation the results already gathered are still written
(shielded, bounded): they are the outcome of POSTs that already happened.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from actors import PipeReceiver, PipeSender, open_pipe
from sesender.errors import StoreError
from sesender.store.base import WebhookDeliveryStore
from sesender.webhooks.models import AttemptOutcome, AttemptResult, DeliveryTarget, PendingEvent
from sesender.webhooks.poster import PostResult
from sesender.webhooks.retry import DEFAULT_SCHEDULE, decide

logger = logging.getLogger(__name__)

#: How long writing the last results may hold up cancellation.
FLUSH_ON_CANCEL_TIMEOUT = 5.0
#: Tries to record one batch of results before leaving its events to their leases.
WRITE_ATTEMPTS = 3


class Poster(Protocol):
    """What the deliverer posts with (:class:`~sesender.webhooks.poster.WebhookPoster`)."""

    async def post(self, target: DeliveryTarget, event: PendingEvent) -> PostResult: ...

    async def forget(self, target: DeliveryTarget) -> None:
        """Release what was kept for posting to ``target`` (its lane stopped)."""
        ...


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    #: POSTs in flight per endpoint.
    concurrency: int = 16
    #: one attempt's whole deadline, seconds.
    timeout: float = 10.0
    #: how often endpoints are re-read and an idle lane looks for due events, seconds.
    poll_interval: float = 1.0
    #: seconds to wait before attempt 2, 3, ...; the event fails after the last.
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: an endpoint failing without one success for this long is disabled.
    disable_after_ms: int = 5 * 86_400_000
    #: results written per transaction at most, and how long the recorder gathers them.
    flush_size: int = 500
    flush_interval: float = 0.05

    def lease_ms(self) -> int:
        return round((2 * self.timeout + 30) * 1000)


@dataclass(frozen=True, slots=True)
class DelivererStatistics:
    lanes: int
    in_flight: int
    delivered: int
    retried: int
    failed: int
    recorded: int


@dataclass(slots=True)
class _Lane:
    target: DeliveryTarget
    scope: trio.CancelScope
    outstanding: int = 0
    room: trio.Event = field(default_factory=trio.Event)


class WebhookDeliverer:
    def __init__(
        self,
        *,
        store: WebhookDeliveryStore,
        poster: Poster,
        settings: DeliverySettings,
        now_ms: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._poster = poster
        self._settings = settings
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._lanes: dict[str, _Lane] = {}
        self._delivered = self._retried = self._failed = self._recorded = 0
        self._refresh = trio.Event()

    def refresh_soon(self) -> None:
        """Re-read endpoints and look for due events now (an endpoint was changed, an event
        queued or resent through the API): saves waiting up to ``poll_interval``."""
        self._refresh.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        results_tx, results_rx = open_pipe[AttemptResult](
            "webhook-results", max(1000, self._settings.flush_size * 4)
        )
        async with trio.open_nursery() as nursery, results_tx:
            nursery.start_soon(self._record, results_rx)
            task_status.started()
            while True:
                await self._reconcile(nursery, results_tx)
                with trio.move_on_after(self._settings.poll_interval):
                    await self._refresh.wait()
                if self._refresh.is_set():
                    self._refresh = trio.Event()
                    for lane in self._lanes.values():
                        lane.room.set()  # a lane waiting for due events looks again

    async def _reconcile(
        self, nursery: trio.Nursery, results_tx: PipeSender[AttemptResult]
    ) -> None:
        try:
            targets = {
                t.endpoint_id: t for t in await self._store.webhook_targets(now_ms=self._now_ms())
            }
        except StoreError as exc:
            logger.warning("could not read webhook endpoints: %s", exc)
            return
        for endpoint_id in list(self._lanes):
            lane = self._lanes[endpoint_id]
            target = targets.get(endpoint_id)
            if target is None or target.url != lane.target.url:
                lane.scope.cancel()
                del self._lanes[endpoint_id]
            else:
                lane.target = target  # a rotated secret signs from the next attempt
        for endpoint_id, target in targets.items():
            if endpoint_id not in self._lanes:
                lane = _Lane(target=target, scope=trio.CancelScope())
                self._lanes[endpoint_id] = lane
                nursery.start_soon(self._run_lane, lane, results_tx.clone())

    async def _run_lane(self, lane: _Lane, results_tx: PipeSender[AttemptResult]) -> None:
        concurrency = self._settings.concurrency
        events_tx, events_rx = trio.open_memory_channel[PendingEvent](2 * concurrency)
        try:
            with lane.scope:
                async with trio.open_nursery() as nursery, results_tx, events_tx, events_rx:
                    for _ in range(concurrency):
                        nursery.start_soon(
                            self._post_loop, lane, events_rx.clone(), results_tx.clone()
                        )
                    await self._claim_loop(lane, events_tx)
        finally:
            with trio.move_on_after(FLUSH_ON_CANCEL_TIMEOUT, shield=True):
                await self._poster.forget(lane.target)

    async def _claim_loop(
        self, lane: _Lane, events_tx: trio.MemorySendChannel[PendingEvent]
    ) -> None:
        settings = self._settings
        capacity = 2 * settings.concurrency
        while True:
            while lane.outstanding > settings.concurrency:
                lane.room = trio.Event()
                await lane.room.wait()
            now = self._now_ms()
            try:
                events = await self._store.claim_webhook_events(
                    lane.target.endpoint_id,
                    now_ms=now,
                    lease_until_ms=now + settings.lease_ms(),
                    limit=capacity - lane.outstanding,
                )
            except StoreError as exc:
                logger.warning("could not claim webhook events: %s", exc)
                events = []
            lane.outstanding += len(events)
            for event in events:
                events_tx.send_nowait(event)  # never full: outstanding <= capacity
            if not events:
                lane.room = trio.Event()
                with trio.move_on_after(settings.poll_interval):
                    await lane.room.wait()

    async def _post_loop(
        self,
        lane: _Lane,
        events_rx: trio.MemoryReceiveChannel[PendingEvent],
        results_tx: PipeSender[AttemptResult],
    ) -> None:
        # A post yields to trio many times; taking the next event and handing the result on
        # without one more yield each when they are ready saves two of a delivery's few task
        # switches (about a tenth of the deliverer's CPU, measured); they wait when they must.
        async with events_rx, results_tx:
            while True:
                try:
                    event = events_rx.receive_nowait()
                except trio.WouldBlock:
                    try:
                        event = await events_rx.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    return
                result = await self._attempt(lane.target, event)
                try:
                    results_tx.send_nowait(result)
                except trio.WouldBlock:
                    await results_tx.send(result)
                lane.outstanding -= 1
                if lane.outstanding <= self._settings.concurrency:
                    lane.room.set()

    async def _attempt(self, target: DeliveryTarget, event: PendingEvent) -> AttemptResult:
        posted = await self._poster.post(target, event)
        attempted_at = self._now_ms()
        attempt = event.attempts + 1
        outcome, due_at = decide(
            attempt=attempt,
            status_code=posted.status_code,
            now_ms=attempted_at,
            schedule=self._settings.schedule,
            rng=self._rng,
        )
        if outcome is AttemptOutcome.DELIVERED:
            self._delivered += 1
        elif outcome is AttemptOutcome.FAILED:
            self._failed += 1
            logger.warning(
                "webhook event %s to endpoint %s failed after %d attempts: %s",
                event.event_id,
                event.endpoint_id,
                attempt,
                posted.error,
                extra={"event": "webhook_failed", "endpoint_id": event.endpoint_id},
            )
        else:
            self._retried += 1
        return AttemptResult(
            row_id=event.row_id,
            event_id=event.event_id,
            endpoint_id=event.endpoint_id,
            event_type=event.event_type,
            attempt=attempt,
            attempted_at_ms=attempted_at,
            duration_ms=posted.duration_ms,
            status_code=posted.status_code,
            error=posted.error,
            outcome=outcome,
            due_at_ms=due_at,
        )

    async def _record(self, results_rx: PipeReceiver[AttemptResult]) -> None:
        settings = self._settings
        batch: list[AttemptResult] = []
        try:
            async with results_rx:
                while True:
                    try:
                        batch.append(await results_rx.receive())
                    except trio.EndOfChannel:
                        return
                    # Let the attempts finishing about now join this transaction (taking those
                    # already waiting without a task switch each).
                    with trio.move_on_after(settings.flush_interval):
                        while len(batch) < settings.flush_size:
                            try:
                                batch.append(results_rx.receive_nowait())
                            except trio.WouldBlock:
                                try:
                                    batch.append(await results_rx.receive())
                                except trio.EndOfChannel:
                                    break
                            except trio.EndOfChannel:
                                break
                    await self._write(batch)
                    batch = []
        finally:
            if batch:  # cancelled: these POSTs happened; record them if the store lets us
                with trio.move_on_after(FLUSH_ON_CANCEL_TIMEOUT, shield=True):
                    await self._write(batch)

    async def _write(self, batch: list[AttemptResult]) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                disabled = await self._store.record_webhook_attempts(
                    batch, now_ms=self._now_ms(), disable_after_ms=self._settings.disable_after_ms
                )
            except StoreError as exc:
                logger.warning("could not record %d webhook attempts: %s", len(batch), exc)
                if attempt + 1 < WRITE_ATTEMPTS:
                    await trio.sleep(1.0)
                continue
            self._recorded += len(batch)
            for endpoint_id in disabled:
                logger.warning(
                    "webhook endpoint %s disabled",
                    endpoint_id,
                    extra={"event": "webhook_endpoint_disabled", "endpoint_id": endpoint_id},
                )
            if disabled:
                self.refresh_soon()
            return
        # Not recorded: the events stay leased and go again once the lease runs out (at least
        # once), which is all a failing database leaves us.

    def statistics(self) -> DelivererStatistics:
        return DelivererStatistics(
            lanes=len(self._lanes),
            in_flight=sum(lane.outstanding for lane in self._lanes.values()),
            delivered=self._delivered,
            retried=self._retried,
            failed=self._failed,
            recorded=self._recorded,
        )
