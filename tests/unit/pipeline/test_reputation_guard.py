"""The reputation guard, the sending gate's two kinds of closing, and the account monitor's polls.

The guard runs on an in-memory :class:`~sesender.store.base.ReputationStore` (the SQLite side is
tested in tests/unit/store/test_reputation_store.py), under trio's autojump clock.
"""

from __future__ import annotations

import trio
import trio.testing

from actors import TokenBucket
from sesender.backends.memory import MemoryBackend
from sesender.config import GuardConfig
from sesender.models import (
    ClaimedEmail,
    Content,
    GuardCounts,
    HoldScope,
    ReputationCounts,
    ReputationHold,
)
from sesender.pipeline.account_monitor import AccountMonitor
from sesender.pipeline.control import PipelineControl, SendingGate
from sesender.pipeline.reputation_guard import ReputationGuard
from tests.unit.pipeline.fakes import trio_ms

SETTINGS = GuardConfig(bounce_rate=0.04, complaint_rate=0.0008, min_sends=1000, topic_min_sends=200)


class FakeReputationStore:
    """Counts set by the test; holds recorded as the SQLite store records them."""

    def __init__(self) -> None:
        self.counts = ReputationCounts(account=GuardCounts(), topics={})
        self.holds: dict[tuple[HoldScope, str], ReputationHold] = {}
        self.queries = 0

    async def reputation_counts(self, *, since_ms: int) -> ReputationCounts:
        await trio.lowlevel.checkpoint()
        self.queries += 1
        return self.counts

    async def reputation_holds(self) -> list[ReputationHold]:
        await trio.lowlevel.checkpoint()
        return list(self.holds.values())

    async def hold_topic(self, topic_id: str, *, reason: str, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        key = (HoldScope.TOPIC, topic_id)
        if key in self.holds:
            return -1
        self.holds[key] = ReputationHold(HoldScope.TOPIC, topic_id, reason, now_ms)
        return 5

    async def resume_topic(self, topic_id: str, *, now_ms: int) -> int | None:
        await trio.lowlevel.checkpoint()
        return 5 if self.holds.pop((HoldScope.TOPIC, topic_id), None) else None

    async def hold_account(self, *, reason: str, now_ms: int) -> bool:
        await trio.lowlevel.checkpoint()
        key = (HoldScope.ACCOUNT, "")
        if key in self.holds:
            return False
        self.holds[key] = ReputationHold(HoldScope.ACCOUNT, "", reason, now_ms)
        return True

    async def resume_account(self, *, now_ms: int) -> bool:
        await trio.lowlevel.checkpoint()
        return self.holds.pop((HoldScope.ACCOUNT, ""), None) is not None


def guard_for(
    store: FakeReputationStore, settings: GuardConfig = SETTINGS
) -> tuple[ReputationGuard, PipelineControl]:
    control = PipelineControl()
    guard = ReputationGuard(store=store, control=control, settings=settings, now_ms=trio_ms)
    return guard, control


# -- the sending gate ---------------------------------------------------------------------------


async def test_a_hold_outlasts_the_end_of_an_account_pause_and_the_other_way_round() -> None:
    gate = SendingGate()
    assert gate.pause("SendingPausedException")
    assert gate.hold("bounce rate 5%")
    assert gate.reason == "bounce rate 5%; SendingPausedException"
    gate.resume()  # the provider can send again: the guard's hold stays
    assert gate.is_paused
    assert gate.held
    assert not gate.account_paused
    assert gate.release()
    assert not gate.is_paused
    assert gate.hold("again")
    assert gate.pause("quota")
    assert gate.release()
    assert gate.is_paused  # the account pause stays
    gate.resume()
    assert not gate.is_paused
    assert gate.statistics().pauses_total == 2  # closed twice, however many reasons


async def test_waiting_for_the_gate_sees_a_release() -> None:
    gate = SendingGate()
    gate.hold("complaints")
    opened = []

    async def wait() -> None:
        await gate.wait_open()
        opened.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert opened == []
        gate.release()
    assert opened == [True]


# -- the guard ----------------------------------------------------------------------------------


async def test_a_topic_past_the_bounce_rate_after_enough_sends_is_held() -> None:
    store = FakeReputationStore()
    store.counts = ReputationCounts(
        account=GuardCounts(sends=600, bounces=30),
        topics={
            "bad": GuardCounts(sends=200, bounces=8),  # 4.0 %: reached
            "young": GuardCounts(sends=199, bounces=50),  # too few sends to judge
            "fine": GuardCounts(sends=400, bounces=15),  # 3.75 %
        },
    )
    guard, control = guard_for(store)
    await guard.evaluate()
    assert control.held_topics.reasons().keys() == {"bad"}
    assert "4.00% (8 of 200 sends)" in control.held_topics.reasons()["bad"]
    assert set(store.holds) == {(HoldScope.TOPIC, "bad")}
    assert not control.gate.is_paused  # the account is below its minimum of sends
    await guard.evaluate()  # already held: not held again
    assert guard.statistics().topic_holds_total == 1


async def test_the_account_is_held_on_complaints_or_bounces_only_past_min_sends() -> None:
    store = FakeReputationStore()
    store.counts = ReputationCounts(account=GuardCounts(sends=999, complaints=5), topics={})
    guard, control = guard_for(store)
    await guard.evaluate()
    assert not control.gate.is_paused
    store.counts = ReputationCounts(account=GuardCounts(sends=1250, complaints=1), topics={})
    await guard.evaluate()
    assert control.gate.held
    assert "complaint rate 0.080%" in control.gate.reason
    assert (HoldScope.ACCOUNT, "") in store.holds

    assert await guard.resume_account()
    assert not control.gate.is_paused
    assert store.holds == {}
    assert not await guard.resume_account()  # nothing held any more


async def test_the_account_bounce_threshold() -> None:
    store = FakeReputationStore()
    store.counts = ReputationCounts(account=GuardCounts(sends=1000, bounces=39), topics={})
    guard, control = guard_for(store)
    await guard.evaluate()
    assert not control.gate.is_paused
    store.counts = ReputationCounts(account=GuardCounts(sends=1000, bounces=40), topics={})
    await guard.evaluate()
    assert "bounce rate 4.00%" in control.gate.statistics().hold_reason


async def test_a_disabled_guard_counts_but_holds_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeReputationStore()
    store.counts = ReputationCounts(
        account=GuardCounts(sends=5000, bounces=4000), topics={"t": GuardCounts(500, 400)}
    )
    settings = GuardConfig(enabled=False, check_interval=1.0)
    guard, control = guard_for(store, settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert not control.gate.is_paused
    assert control.held_topics.none


async def test_holds_are_loaded_before_the_guard_reports_started_and_resumed_by_topic() -> None:
    store = FakeReputationStore()
    store.holds[(HoldScope.ACCOUNT, "")] = ReputationHold(HoldScope.ACCOUNT, "", "complaints", 1)
    store.holds[(HoldScope.TOPIC, "t")] = ReputationHold(HoldScope.TOPIC, "t", "bounces", 2)
    guard, control = guard_for(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        assert control.gate.held
        assert "t" in control.held_topics
        control.scheduler_wakeup.clear()
        assert await guard.resume_topic("t") == 5
        assert "t" not in control.held_topics
        assert await guard.resume_topic("t") is None
        await control.scheduler_wakeup.wait()  # woken so the requeued emails go out now
        nursery.cancel_scope.cancel()


async def test_a_bounce_wakes_the_guard_before_its_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeReputationStore()
    guard, control = guard_for(store, GuardConfig(check_interval=3600))
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        await trio.sleep(1)
        assert store.queries == 0
        store.counts = ReputationCounts(
            account=GuardCounts(sends=300, bounces=30), topics={"t": GuardCounts(300, 30)}
        )
        guard.note_event("Delivery")  # does not move the rates
        await trio.sleep(1)
        assert store.queries == 0
        guard.note_event("Bounce")
        await trio.sleep(0.1)  # long before the hour of its interval
        assert "t" in control.held_topics
        nursery.cancel_scope.cancel()


async def test_a_held_topic_leaves_a_batch_waiting_for_tokens() -> None:
    control = PipelineControl()
    scope = trio.CancelScope()
    email = ClaimedEmail(1, "t", "a@example.com", Content("s", "b"), attempts=0)
    control.token_wait = ([email], scope)
    control.hold_topic_in_memory("other", "x")
    assert not scope.cancel_called
    control.hold_topic_in_memory("t", "bounces")
    assert scope.cancel_called


# -- the account monitor's polls ----------------------------------------------------------------


async def test_polls_pause_when_the_account_cannot_send_and_follow_max_send_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(max_send_rate=50.0)
    control = PipelineControl()
    bucket = TokenBucket(100, 10)
    monitor = AccountMonitor(
        backend=backend,
        control=control,
        bucket=bucket,
        probe_interval=5.0,
        cap_to_account_rate=True,
        poll_interval=300.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(1)
        assert bucket.statistics().rate == 50.0  # capped at the account's rate at start
        backend.max_send_rate = 80.0  # SES raised it
        await trio.sleep(300)
        assert bucket.statistics().rate == 80.0
        backend.max_send_rate = 500.0  # above the setting: the setting is the ceiling
        await trio.sleep(300)
        assert bucket.statistics().rate == 100.0
        backend.max_send_rate = 20.0  # lowered
        await trio.sleep(300)
        assert bucket.statistics().rate == 20.0
        backend.pause("Sending paused for this account.")
        await trio.sleep(300)
        assert control.gate.account_paused
        assert "Sending paused" in control.gate.reason
        backend.resume()
        await trio.sleep(10)  # the probes end the pause
        assert not control.gate.is_paused
        assert monitor.statistics().polls >= 5
        nursery.cancel_scope.cancel()


async def test_the_monitor_never_lifts_a_hold(autojump_clock: trio.testing.MockClock) -> None:
    backend = MemoryBackend()
    control = PipelineControl()
    monitor = AccountMonitor(
        backend=backend,
        control=control,
        bucket=TokenBucket(10, 1),
        probe_interval=1.0,
        poll_interval=5.0,
    )
    control.gate.hold("complaints")
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(60)
        assert control.gate.held
        assert control.gate.is_paused
        nursery.cancel_scope.cancel()


async def test_a_store_that_fails_is_waited_out_and_the_hold_recorded_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from sesender.errors import StoreUnavailable

    class FlakyStore(FakeReputationStore):
        failing = True

        async def hold_topic(self, topic_id: str, *, reason: str, now_ms: int) -> int:
            if self.failing:
                raise StoreUnavailable("database or disk is full")
            return await super().hold_topic(topic_id, reason=reason, now_ms=now_ms)

        async def reputation_counts(self, *, since_ms: int) -> ReputationCounts:
            if self.failing and self.queries:
                self.queries += 1
                raise StoreUnavailable("database or disk is full")
            return await super().reputation_counts(since_ms=since_ms)

    store = FlakyStore()
    store.counts = ReputationCounts(
        account=GuardCounts(sends=300, bounces=30), topics={"t": GuardCounts(300, 30)}
    )
    guard, control = guard_for(store, GuardConfig(check_interval=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        await trio.sleep(5)  # evaluations fail; the actor lives on
        assert "t" in control.held_topics  # held in memory at once
        assert store.holds == {}
        store.failing = False
        await trio.sleep(3)
        assert set(store.holds) == {(HoldScope.TOPIC, "t")}
        nursery.cancel_scope.cancel()


async def test_holds_recorded_or_lifted_by_another_instance_are_followed() -> None:
    """Several instances share one database: a hold one of them recorded, and an operator's
    resume on one of them, reach the others at their next evaluation."""
    store = FakeReputationStore()
    guard, control = guard_for(store)
    store.holds[(HoldScope.ACCOUNT, "")] = ReputationHold(HoldScope.ACCOUNT, "", "complaints", 1)
    store.holds[(HoldScope.TOPIC, "t")] = ReputationHold(HoldScope.TOPIC, "t", "bounces", 2)
    await guard.evaluate()
    assert control.gate.held
    assert "t" in control.held_topics
    store.holds.clear()  # resumed elsewhere
    control.scheduler_wakeup.clear()
    await guard.evaluate()
    assert not control.gate.is_paused
    assert control.held_topics.none
    await control.scheduler_wakeup.wait()
