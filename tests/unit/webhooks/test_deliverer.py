"""The delivery actor under trio's autojump clock, with an in-memory store and a scripted poster:
lanes per endpoint (a hanging one holds only its own, bounded), retries on the schedule, results
recorded in batches, endpoint changes picked up, attempts already made recorded on cancellation."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import trio
import trio.testing

from sesender.webhooks.deliverer import DeliverySettings, WebhookDeliverer
from sesender.webhooks.models import (
    AttemptOutcome,
    AttemptResult,
    DeliveryTarget,
    EventState,
    PendingEvent,
)
from sesender.webhooks.poster import PostResult
from tests.waiting import wait_until


def now_ms() -> int:
    return round(trio.current_time() * 1000)


@dataclass
class Row:
    event: PendingEvent
    due_at: int = 0
    lease_until: int | None = None
    state: EventState = EventState.PENDING


@dataclass
class MemoryDeliveryStore:
    """The WebhookDeliveryStore contract in memory (the SQLite one has its own tests)."""

    targets: list[DeliveryTarget] = field(default_factory=list)
    rows: dict[int, Row] = field(default_factory=dict)
    results: list[AttemptResult] = field(default_factory=list)
    batches: int = 0

    def add(self, endpoint_id: str, count: int) -> None:
        for _ in range(count):
            row_id = len(self.rows) + 1
            self.rows[row_id] = Row(
                PendingEvent(
                    row_id=row_id,
                    event_id=f"evt_{row_id}",
                    endpoint_id=endpoint_id,
                    event_type="email.sent",
                    request_id=row_id,
                    topic_id="t",
                    email="a@example.com",
                    message_id=None,
                    suppressed=None,
                    detail=None,
                    occurred_at_ms=0,
                    attempts=0,
                )
            )

    def leased(self, endpoint_id: str) -> int:
        now = now_ms()
        return sum(
            1
            for row in self.rows.values()
            if row.event.endpoint_id == endpoint_id
            and row.state is EventState.PENDING
            and row.lease_until is not None
            and row.lease_until > now
        )

    def states(self, endpoint_id: str) -> list[EventState]:
        return [row.state for row in self.rows.values() if row.event.endpoint_id == endpoint_id]

    async def webhook_targets(self, *, now_ms: int) -> list[DeliveryTarget]:
        await trio.lowlevel.checkpoint()
        return list(self.targets)

    async def claim_webhook_events(
        self, endpoint_id: str, *, now_ms: int, lease_until_ms: int, limit: int
    ) -> list[PendingEvent]:
        await trio.lowlevel.checkpoint()
        claimed: list[PendingEvent] = []
        for row in self.rows.values():
            if len(claimed) >= limit:
                break
            if (
                row.event.endpoint_id == endpoint_id
                and row.state is EventState.PENDING
                and row.due_at <= now_ms
                and (row.lease_until is None or row.lease_until <= now_ms)
            ):
                row.lease_until = lease_until_ms
                claimed.append(row.event)
        return claimed

    async def record_webhook_attempts(
        self, results: Sequence[AttemptResult], *, now_ms: int, disable_after_ms: int
    ) -> list[str]:
        await trio.lowlevel.checkpoint()
        self.batches += 1
        for result in results:
            row = self.rows[result.row_id]
            row.lease_until = None
            row.event = replace(row.event, attempts=result.attempt)
            row.due_at = result.due_at_ms
            row.state = {
                AttemptOutcome.DELIVERED: EventState.DELIVERED,
                AttemptOutcome.FAILED: EventState.FAILED,
            }.get(result.outcome, EventState.PENDING)
            self.results.append(result)
        return []

    async def release_webhook_leases(self, *, only_expired: bool = False) -> int:
        return 0


Script = Callable[[DeliveryTarget, PendingEvent], Awaitable[PostResult]]


@dataclass
class ScriptedPoster:
    scripts: dict[str, Script]
    in_flight: dict[str, int] = field(default_factory=dict)
    secrets_seen: list[tuple[str, ...]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    async def post(self, target: DeliveryTarget, event: PendingEvent) -> PostResult:
        self.in_flight[target.endpoint_id] = self.in_flight.get(target.endpoint_id, 0) + 1
        self.secrets_seen.append(target.secrets)
        try:
            return await self.scripts[target.endpoint_id](target, event)
        finally:
            self.in_flight[target.endpoint_id] -= 1

    async def forget(self, target: DeliveryTarget) -> None:
        await trio.lowlevel.checkpoint()
        self.forgotten.append(target.endpoint_id)


async def answer(status: int, delay: float = 0.01) -> PostResult:
    await trio.sleep(delay)
    return PostResult(
        status_code=status, error=None if status < 300 else f"HTTP {status}", duration_ms=10
    )


async def ok(target: DeliveryTarget, event: PendingEvent) -> PostResult:
    return await answer(204)


async def hang(target: DeliveryTarget, event: PendingEvent) -> PostResult:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


SETTINGS = DeliverySettings(concurrency=4, timeout=10, poll_interval=1.0, schedule=(5, 300))


def deliverer(store: MemoryDeliveryStore, poster: ScriptedPoster) -> WebhookDeliverer:
    return WebhookDeliverer(
        store=store, poster=poster, settings=SETTINGS, now_ms=now_ms, rng=random.Random(3)
    )


async def test_a_hanging_endpoint_holds_only_its_own_bounded_lane(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryDeliveryStore(
        targets=[
            DeliveryTarget("ep_hang", "http://h", ("s",)),
            DeliveryTarget("ep_ok", "http://o", ("s",)),
        ]
    )
    store.add("ep_hang", 100)
    store.add("ep_ok", 100)
    poster = ScriptedPoster({"ep_hang": hang, "ep_ok": ok})
    actor = deliverer(store, poster)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await wait_until(
            lambda: _true(store.states("ep_ok").count(EventState.DELIVERED) == 100), timeout=60
        )
        # The hanging lane: CONCURRENCY posts stuck, at most 2 x CONCURRENCY events leased.
        assert poster.in_flight["ep_hang"] == SETTINGS.concurrency
        assert store.leased("ep_hang") == 2 * SETTINGS.concurrency
        assert store.states("ep_hang").count(EventState.PENDING) == 100
        assert actor.statistics().delivered == 100
        # Results are written in batches, not one transaction per attempt.
        assert store.batches < 100
        nursery.cancel_scope.cancel()


async def _true(value: bool) -> bool:
    await trio.lowlevel.checkpoint()
    return value


async def test_failures_retry_on_the_schedule_then_deliver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryDeliveryStore(targets=[DeliveryTarget("ep", "http://e", ("s",))])
    store.add("ep", 1)
    answers = iter([500, 503, 200])

    async def flaky(target: DeliveryTarget, event: PendingEvent) -> PostResult:
        return await answer(next(answers))

    actor = deliverer(store, ScriptedPoster({"ep": flaky}))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await wait_until(lambda: _true(store.states("ep") == [EventState.DELIVERED]), timeout=1000)
        nursery.cancel_scope.cancel()
    outcomes = [(r.attempt, r.outcome, r.status_code) for r in store.results]
    assert outcomes == [
        (1, AttemptOutcome.RETRY, 500),
        (2, AttemptOutcome.RETRY, 503),
        (3, AttemptOutcome.DELIVERED, 200),
    ]
    first, second, third = store.results
    assert 4500 <= first.due_at_ms - first.attempted_at_ms <= 5500
    assert 270_000 <= second.due_at_ms - second.attempted_at_ms <= 330_000
    # Each retry went out once due (plus at most a poll interval), never before.
    assert first.due_at_ms <= second.attempted_at_ms - 10 <= first.due_at_ms + 1000
    assert second.due_at_ms <= third.attempted_at_ms - 10 <= second.due_at_ms + 1000


async def test_endpoint_changes_are_picked_up(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryDeliveryStore(targets=[DeliveryTarget("ep", "http://e", ("old",))])
    poster = ScriptedPoster({"ep": ok})
    actor = deliverer(store, poster)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store.add("ep", 1)
        await wait_until(lambda: _true(len(store.results) == 1), timeout=10)
        store.targets = [DeliveryTarget("ep", "http://e", ("new", "old"))]  # rotated
        actor.refresh_soon()
        await trio.sleep(0.1)
        store.add("ep", 1)
        await wait_until(lambda: _true(len(store.results) == 2), timeout=10)
        assert poster.secrets_seen == [("old",), ("new", "old")]
        store.targets = []  # disabled or deleted: its lane stops
        actor.refresh_soon()
        await wait_until(lambda: _true(poster.forgotten == ["ep"]), timeout=10)
        assert actor.statistics().lanes == 0
        store.add("ep", 1)
        await trio.sleep(30)
        assert len(store.results) == 2
        nursery.cancel_scope.cancel()


async def test_cancellation_still_records_attempts_already_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryDeliveryStore(targets=[DeliveryTarget("ep", "http://e", ("s",))])
    store.add("ep", 3)
    actor = WebhookDeliverer(
        store=store,
        poster=ScriptedPoster({"ep": ok}),
        settings=replace(SETTINGS, flush_interval=100.0, flush_size=1000),
        now_ms=now_ms,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await wait_until(lambda: _true(actor.statistics().delivered == 3), timeout=10)
        assert store.results == []  # still gathering (flush_interval is long)
        nursery.cancel_scope.cancel()
    assert [r.outcome for r in store.results] == [AttemptOutcome.DELIVERED] * 3
