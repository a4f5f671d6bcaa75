"""The four actors together under one supervisor, on the fake store and the memory backend."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

from actors import ActorCrashed, open_supervisor
from sesender.backends.base import AccountStatus, OutgoingEmail
from sesender.backends.memory import MemoryBackend
from sesender.config import PipelineConfig
from sesender.errors import AccountSendError, StoreUnavailable, TransientSendError
from sesender.models import Status
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.pipeline import Pipeline, batch_size
from sesender.tracking import TokenSigner
from tests.unit.pipeline.fakes import FakeQueueStore, trio_ms

COMPOSER = MessageComposer(
    sender="from@example.com",
    public_url="http://localhost:3000",
    signer=TokenSigner(b"k" * 32),
    configuration_set=None,
    unsubscribe_enabled=False,
)


def settings(**overrides: object) -> PipelineConfig:
    """A pipeline configuration for these tests; ``rate`` stands for ``max_send_per_second``."""
    values: dict[str, object] = {
        "max_send_per_second": overrides.pop("rate", 10),
        "burst": 1,
        "send_channel_size": 100,
        "post_channel_size": 100,
        "scheduler_interval": 10,
        "schedule_timezone": ZoneInfo("UTC"),
        "max_attempts": 5,
        "retry_base_delay": 1.0,
        "retry_max_delay": 10.0,
        "flush_size": 100,
        "flush_interval": 0.5,
        "pause_probe_interval": 5.0,
        "cap_to_account_rate": False,
    }
    values.update(overrides)
    return PipelineConfig(**values)  # type: ignore[arg-type]


def build(store: FakeQueueStore, backend: MemoryBackend, **overrides: object) -> Pipeline:
    return Pipeline(
        store=store,
        backend=backend,
        composer=COMPOSER,
        settings=settings(**overrides),
        now_ms=trio_ms,
        rng=random.Random(3),
    )


async def drain(pipeline: Pipeline, supervisor_cancel: trio.CancelScope) -> None:
    pipeline.begin_stop()
    await pipeline.wait_drained()
    supervisor_cancel.cancel()


async def test_all_sent_at_the_configured_rate(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeQueueStore()
    store.add(50)
    backend = MemoryBackend(latency=0.05)
    pipeline = build(store, backend, rate=10)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await backend.wait_sent(50)
        await trio.sleep(1)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 50
    starts = sorted(r.started_at for r in backend.sent)
    assert starts[0] == 0
    assert starts[-1] == pytest.approx(4.9)  # one every 100 ms, burst 1
    assert backend.statistics().peak_in_flight <= 20


async def test_throttling_is_retried_until_everything_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(100)
    backend = MemoryBackend(throttle_rate=0.2, seed=7)
    pipeline = build(store, backend, rate=20)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await backend.wait_sent(100)
        await trio.sleep(1)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 100
    stats = backend.statistics()
    assert stats.throttled > 0
    assert stats.attempts == 100 + stats.throttled
    assert sum(row.attempts for row in store.rows.values()) == stats.attempts
    # Every attempt took a token: attempts / elapsed never beats the rate (+ burst).
    last = max(r.started_at for r in backend.sent)
    assert stats.attempts <= 20 * last + 1


async def test_account_pause_fails_nothing_and_resumes_after_a_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(20)
    backend = MemoryBackend()

    def pause_once(email: OutgoingEmail) -> None:
        if email.request_id == 5 and not paused_once:
            paused_once.append(True)
            backend.pause("Sending paused for this account")
            raise AccountSendError("Sending paused for this account", code="SendingPausedException")

    paused_once: list[bool] = []
    backend.script = pause_once
    pipeline = build(store, backend, rate=10, pause_probe_interval=5.0)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await pipeline.control.gate.wait_paused()
        paused_at = trio.current_time()
        await trio.sleep(30)
        assert pipeline.control.gate.is_paused  # probes at +5, +15 (doubling) still see a pause
        assert store.by_status(Status.FAILED) == []
        backend.resume()
        await backend.wait_sent(20)
        resumed_at = trio.current_time()
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 20
    assert store.by_status(Status.FAILED) == []
    assert resumed_at > paused_at + 30


async def test_cancel_stops_queued_and_spares_other_topics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore()
    store.add(40, topic="a")
    store.add(40, topic="b")
    backend = MemoryBackend(latency=0.05)
    pipeline = build(store, backend, rate=10)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await trio.sleep(1.05)
        cancelled_at = trio.current_time()
        stopped = await pipeline.cancel_topic("a")
        await backend.wait_sent(len([r for r in backend.sent if r.email.topic_id == "a"]) + 40)
        await trio.sleep(1)
        await drain(pipeline, supervisor.cancel_scope)
    sent_a = [r for r in backend.sent if r.email.topic_id == "a"]
    assert all(r.started_at <= cancelled_at for r in sent_a)
    assert len(sent_a) + stopped == 40
    assert len(store.by_status(Status.STOPPED)) == stopped
    assert len([r for r in backend.sent if r.email.topic_id == "b"]) == 40


async def test_a_crashing_actor_takes_the_service_down_with_its_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class BrokenStore(FakeQueueStore):
        async def next_due_at(self) -> int | None:
            raise RuntimeError("boom")

    pipeline = build(BrokenStore(), MemoryBackend())
    crashes: list[str] = []
    with pytest.raises(ActorCrashed) as caught:
        async with open_supervisor(on_crash=lambda name, exc: crashes.append(name)) as supervisor:
            await pipeline.start(supervisor)
    assert caught.value.actor == "scheduler"
    assert crashes == ["scheduler"]


async def test_an_unreachable_provider_pauses_instead_of_failing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connection refused for 30 s: emails wait (no attempt spent), then all go."""
    store = FakeQueueStore()
    store.add(30)
    outage = [False]  # SES answers the start-up account check, then goes away

    class DownBackend(MemoryBackend):
        async def account_status(self) -> AccountStatus:
            return AccountStatus(can_send=not outage[0], reason="connection refused")

    def refuse(email: OutgoingEmail) -> None:
        if outage[0]:
            raise TransientSendError(
                "SES unreachable: connection refused",
                code="EndpointConnectionError",
                unreachable=True,
            )

    backend = DownBackend(script=refuse)
    pipeline = build(
        store, backend, rate=10, max_attempts=2, retry_base_delay=0.1, retry_max_delay=0.2
    )
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        outage[0] = True
        await pipeline.control.gate.wait_paused()
        await trio.sleep(30)
        assert store.by_status(Status.FAILED) == []
        assert "EndpointConnectionError" in pipeline.control.gate.reason
        outage[0] = False
        await backend.wait_sent(30)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 30
    assert store.by_status(Status.FAILED) == []
    # Probes came quickly (1 s, then doubling to at most 5 s), so sending resumed within 5 s of
    # the end of the outage, and the 30 emails then took 3 s at 10/s.
    assert max(r.started_at for r in backend.sent) < 30 + 5 + 3 + 1


async def test_a_stalled_database_slows_the_pipeline_and_loses_no_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Outcomes wait for the database as long as it takes: finished sends hold their slot, the
    pool stops taking emails, and every outcome is written once the database is back."""
    store = FakeQueueStore(unavailable_writes=6)  # refused for 0.1+0.5+1+2+5+5 s
    store.add(300)
    backend = MemoryBackend(latency=0.01)
    pipeline = build(store, backend, rate=100, post_channel_size=10)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await trio.sleep(60)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 300
    assert len(backend.sent) == 300  # every send recorded, none repeated
    assert pipeline.post_processor.statistics().write_failures == 6


async def test_a_database_refusing_claims_is_waited_out_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Disk full: the scheduler's claims are refused for a while. It backs off (0.1, 0.5, 1, 2,
    5, 5 s), stays up, and claims everything once the database takes writes again."""
    store = FakeQueueStore(unavailable_claims=6)
    store.add(50)
    backend = MemoryBackend(latency=0.01)
    pipeline = build(store, backend, rate=100)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await backend.wait_sent(50)
        finished = trio.current_time()
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 50
    assert pipeline.scheduler.statistics().store_failures == 6
    # The first claim came after the six back-offs (13.6 s), not a scheduler interval later.
    assert 13.6 <= min(r.started_at for r in backend.sent) < 13.6 + 0.1
    assert finished < 13.6 + 1


async def test_an_email_in_flight_when_its_topic_is_cancelled_is_stopped_if_it_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The email the provider holds at the DELETE is kept; its transient failure then ends it
    Stopped in the store (not back in the queue), and nothing of the topic is attempted again."""
    store = FakeQueueStore()
    store.add(5, topic="a")

    def throttle(email: OutgoingEmail) -> None:
        raise TransientSendError("Maximum sending rate exceeded", code="Throttling", throttled=True)

    backend = MemoryBackend(latency=0.5, script=throttle)
    pipeline = build(
        store, backend, rate=1, max_attempts=5, retry_base_delay=0.1, retry_max_delay=0.2
    )
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await trio.sleep(0.25)  # the first email is with the provider
        assert list(pipeline.control.handed_over) == [1]
        assert await pipeline.cancel_topic("a") == 4
        await trio.sleep(10)
        await drain(pipeline, supervisor.cancel_scope)
    assert store.by_status(Status.STOPPED) == [1, 2, 3, 4, 5]
    assert backend.statistics().attempts == 1


async def test_a_cancel_the_store_refuses_is_withdrawn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DELETE answered 503: the topic's emails were held back meanwhile, none was stopped, and
    they all go out afterwards as if no cancel had been asked for."""
    store = FakeQueueStore(unavailable_stops=1)
    store.add(10, topic="a")
    backend = MemoryBackend(latency=0.05)
    pipeline = build(store, backend, rate=10)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await trio.sleep(0.35)
        with pytest.raises(StoreUnavailable):
            await pipeline.cancel_topic("a")
        assert not pipeline.control.cancelled.is_cancelled("a", 10)
        await backend.wait_sent(10)
        await trio.sleep(1)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == 10
    assert store.cancelled == {}


async def test_recorded_cancellations_are_loaded_at_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeQueueStore(cancelled={"a": 3})
    store.add(3, topic="a")
    store.add(2, topic="a")  # accepted after the cancel
    backend = MemoryBackend()
    pipeline = build(store, backend, rate=10)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        assert pipeline.control.cancelled.is_confirmed("a", 3)
        assert not pipeline.control.cancelled.is_cancelled("a", 4)
        await backend.wait_sent(2)
        await drain(pipeline, supervisor.cancel_scope)
    assert [r.email.request_id for r in backend.sent] == [4, 5]
    assert store.by_status(Status.STOPPED) == [1, 2, 3]


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [(24, 2, 2), (5000, 500, 50), (1000, 100, 50), (10, 1, 1), (1, 5, 2), (200, 20.5, 20)],
)
def test_batch_size_is_bounded_by_burst_bulk_limit_and_in_flight(
    rate: float, burst: float, expected: int
) -> None:
    assert batch_size(settings(rate=rate, burst=burst)) == expected


@pytest.mark.parametrize(("rate", "burst"), [(24, 2), (1000, 100)])
async def test_batches_keep_the_rate_and_the_in_flight_limit(
    autojump_clock: trio.testing.MockClock, rate: int, burst: int
) -> None:
    """However large the batches, no one-second window holds more than R + burst recipients,
    and at most 2 x R recipients are with the backend at once."""
    store = FakeQueueStore()
    total = rate * 5
    store.add(total)
    backend = MemoryBackend(latency=0.3)
    pipeline = build(store, backend, rate=rate, burst=burst, send_channel_size=10_000)
    async with open_supervisor() as supervisor:
        await pipeline.start(supervisor)
        await backend.wait_sent(total)
        await trio.sleep(1)
        await drain(pipeline, supervisor.cancel_scope)
    assert len(store.by_status(Status.SENT)) == total
    starts = sorted(r.started_at for r in backend.sent)
    for first, start in enumerate(starts):
        in_window = sum(1 for s in starts[first:] if s < start + 1.0)
        assert in_window <= rate + burst
    expected_batch = min(burst, 50)
    calls = pipeline.sender_pool.statistics().calls
    assert calls <= 2 * total / expected_batch  # batches are (mostly) full
    assert backend.statistics().peak_in_flight <= 2 * rate
    # The whole run took as long as the rate allows, not longer: (total - burst) / rate.
    assert starts[-1] == pytest.approx((total - burst) / rate, abs=0.05)
