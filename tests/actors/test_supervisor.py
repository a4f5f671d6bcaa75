"""open_supervisor: readiness, states, and the no-restart crash policy, under the autojump clock."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

import pytest
import trio

from actors.supervisor import (
    ActorCrashed,
    ActorState,
    ActorStatistics,
    Supervisor,
    open_supervisor,
)


class Boom(Exception):
    """The failure our test actors raise."""


async def ready_after(
    delay: float, value: object, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    await trio.sleep(delay)
    task_status.started(value)
    await trio.sleep_forever()


async def crash_after(delay: float) -> None:
    await trio.sleep(delay)
    raise Boom(f"after {delay}")


async def crash_before_ready(*, task_status: trio.TaskStatus[None]) -> None:
    await trio.sleep(1)
    raise Boom("never ready")


async def forget_to_start(*, task_status: trio.TaskStatus[None]) -> None:
    await trio.sleep(1)


class Service:
    """Runs a body inside a supervisor and keeps the supervisor for assertions afterwards."""

    supervisor: Supervisor

    def __init__(self, *, on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self._on_crash = on_crash

    async def run(self, body: Callable[[Supervisor], Awaitable[None]]) -> None:
        async with open_supervisor(on_crash=self._on_crash) as self.supervisor:
            await body(self.supervisor)

    def states(self) -> dict[str, ActorState]:
        return states(self.supervisor)


def states(supervisor: Supervisor) -> dict[str, ActorState]:
    return {actor.name: actor.state for actor in supervisor.statistics().actors}


async def test_start_returns_started_value_once_ready(autojump_clock: trio.abc.Clock) -> None:
    seen: list[dict[str, ActorState]] = []

    async with open_supervisor("svc") as supervisor:

        async def observe() -> None:
            await trio.sleep(1)
            seen.append(states(supervisor))

        supervisor.start_soon("observer", observe)
        value = await supervisor.start("store", ready_after, 2, "handle")
        assert value == "handle"
        assert trio.current_time() == 2
        assert states(supervisor) == {"observer": ActorState.FINISHED, "store": ActorState.RUNNING}
        supervisor.cancel()

    assert seen == [{"observer": ActorState.RUNNING, "store": ActorState.STARTING}]
    assert trio.current_time() == 2
    stats = supervisor.statistics()
    assert stats.name == "svc"
    assert stats.first_crash is None
    assert stats.actors == (
        ActorStatistics("observer", ActorState.FINISHED),
        ActorStatistics("store", ActorState.CANCELLED),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.name = "other"  # type: ignore[misc]


async def test_block_waits_for_actors_that_finish(autojump_clock: trio.abc.Clock) -> None:
    async with open_supervisor() as supervisor:
        supervisor.start_soon("migrate", trio.sleep, 3)
        assert supervisor.all_running()
    assert trio.current_time() == 3
    assert states(supervisor) == {"migrate": ActorState.FINISHED}
    assert supervisor.name == "root"


async def test_started_actor_that_returns_is_finished(autojump_clock: trio.abc.Clock) -> None:
    async def serve_once(*, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(8080)
        await trio.sleep(1)

    async with open_supervisor() as supervisor:
        assert await supervisor.start("once", serve_once) == 8080
    assert trio.current_time() == 1
    assert states(supervisor) == {"once": ActorState.FINISHED}


async def test_all_running(autojump_clock: trio.abc.Clock) -> None:
    async with open_supervisor() as supervisor:
        assert not supervisor.all_running()
        supervisor.start_soon("once", trio.sleep, 1)
        await supervisor.start("server", ready_after, 0, None)
        await supervisor.start("worker", ready_after, 0, None)
        assert supervisor.all_running()
        await trio.sleep(2)
        assert not supervisor.all_running()
        assert supervisor.all_running(["server", "worker"])
        assert supervisor.all_running(name for name in ("server",))
        assert not supervisor.all_running(["server", "missing"])
        assert not supervisor.all_running([])
        supervisor.cancel()


async def test_duplicate_names_are_rejected(autojump_clock: trio.abc.Clock) -> None:
    async with open_supervisor() as supervisor:
        supervisor.start_soon("worker", trio.sleep_forever)
        with pytest.raises(ValueError, match="already has an actor named 'worker'"):
            supervisor.start_soon("worker", trio.sleep_forever)
        with pytest.raises(ValueError, match="already has an actor named 'worker'"):
            await supervisor.start("worker", ready_after, 0, None)
        supervisor.cancel()


async def test_cancel_scope_stops_everything_at_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_supervisor() as supervisor:
        supervisor.start_soon("worker", trio.sleep_forever)
        supervisor.cancel_scope.deadline = trio.current_time() + 7
    assert trio.current_time() == 7
    assert states(supervisor) == {"worker": ActorState.CANCELLED}


async def test_crash_cancels_the_others_and_raises_one_actor_crashed(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[tuple[str, BaseException]] = []
    service = Service(on_crash=lambda name, exc: reported.append((name, exc)))

    async def body(supervisor: Supervisor) -> None:
        await supervisor.start("store", ready_after, 0, None)
        supervisor.start_soon("sender", crash_after, 5)
        await trio.sleep_forever()

    with pytest.raises(ActorCrashed) as info:
        await service.run(body)

    assert trio.current_time() == 5
    crash = info.value
    assert crash.actor == "sender"
    assert str(crash) == "actor 'sender' crashed"
    assert isinstance(crash.__cause__, Boom)
    assert not hasattr(crash, "__notes__")
    assert reported == [("sender", crash.__cause__)]
    assert service.states() == {"store": ActorState.CANCELLED, "sender": ActorState.CRASHED}
    assert service.supervisor.statistics().first_crash == "sender"
    assert not service.supervisor.all_running()
    [record] = caplog.records
    assert record.name == "actors.supervisor"
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "actor 'sender' of supervisor 'root' crashed"
    assert record.actor == "sender"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert record.exc_info[1] is crash.__cause__


async def test_crash_hook_failure_does_not_mask_the_crash(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def on_crash(name: str, exc: BaseException) -> None:
        raise RuntimeError("sentry is down")

    async def body(supervisor: Supervisor) -> None:
        supervisor.start_soon("sender", crash_after, 1)

    with pytest.raises(ActorCrashed) as info:
        await Service(on_crash=on_crash).run(body)

    assert isinstance(info.value.__cause__, Boom)
    assert [r.getMessage() for r in caplog.records] == [
        "actor 'sender' of supervisor 'root' crashed",
        "on_crash hook failed for actor 'sender'",
    ]


async def test_crash_before_ready_raises_from_start_and_from_the_block(
    autojump_clock: trio.abc.Clock,
) -> None:
    from_start: list[ActorCrashed] = []
    service = Service()

    async def body(supervisor: Supervisor) -> None:
        supervisor.start_soon("other", trio.sleep_forever)
        try:
            await supervisor.start("store", crash_before_ready)
        except ActorCrashed as exc:
            # Swallowed on purpose: the supervisor must still go down with this crash.
            from_start.append(exc)

    with pytest.raises(ActorCrashed) as info:
        await service.run(body)
    assert trio.current_time() == 1
    assert from_start == [info.value]
    assert info.value.actor == "store"
    assert isinstance(info.value.__cause__, Boom)
    assert service.states() == {"other": ActorState.CANCELLED, "store": ActorState.CRASHED}


async def test_uncaught_crash_before_ready_is_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    async def body(supervisor: Supervisor) -> None:
        await supervisor.start("store", crash_before_ready)

    with pytest.raises(ActorCrashed) as info:
        await Service().run(body)
    assert info.value.actor == "store"
    assert not hasattr(info.value, "__notes__")


async def test_returning_without_started_is_a_crash(autojump_clock: trio.abc.Clock) -> None:
    service = Service()

    async def body(supervisor: Supervisor) -> None:
        await supervisor.start("lazy", forget_to_start)

    with pytest.raises(ActorCrashed) as info:
        await service.run(body)
    assert info.value.actor == "lazy"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "without calling task_status.started()" in str(info.value.__cause__)
    assert service.states() == {"lazy": ActorState.CRASHED}


async def test_two_crashes_raise_the_first_and_note_the_second(
    autojump_clock: trio.abc.Clock,
) -> None:
    reported: list[str] = []
    service = Service(on_crash=lambda name, exc: reported.append(name))

    async def fails_while_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise Boom("cleanup failed")

    async def body(supervisor: Supervisor) -> None:
        supervisor.start_soon("fragile", fails_while_cancelled)
        supervisor.start_soon("sender", crash_after, 2)

    with pytest.raises(ActorCrashed) as info:
        await service.run(body)
    assert info.value.actor == "sender"
    assert reported == ["sender", "fragile"]
    assert info.value.__notes__ == ["actor 'fragile' also crashed: Boom('cleanup failed')"]
    assert service.states() == {"fragile": ActorState.CRASHED, "sender": ActorState.CRASHED}


async def test_body_error_without_crash_keeps_trio_group() -> None:
    service = Service()

    async def body(supervisor: Supervisor) -> None:
        supervisor.start_soon("worker", trio.sleep_forever)
        raise Boom("body")

    with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="body")):
        await service.run(body)
    assert service.states() == {"worker": ActorState.CANCELLED}


async def test_body_error_alongside_crash_is_noted() -> None:
    async def crash_now() -> None:
        raise Boom("actor")

    async def body(supervisor: Supervisor) -> None:
        # The body fails first; the actor still runs up to its first checkpoint and crashes.
        supervisor.start_soon("sender", crash_now)
        raise Boom("body")

    with pytest.raises(ActorCrashed) as info:
        await Service().run(body)
    assert info.value.actor == "sender"
    [note] = info.value.__notes__
    assert note.startswith("the supervisor's body also raised: ")
    assert "Boom('body')" in note


async def test_grouped_cancellation_is_not_a_crash(autojump_clock: trio.abc.Clock) -> None:
    async def with_inner_nursery(*, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
            task_status.started()

    async with open_supervisor() as supervisor:
        await supervisor.start("pool", with_inner_nursery)
        supervisor.cancel()
    assert states(supervisor) == {"pool": ActorState.CANCELLED}


async def test_grouped_error_is_a_crash(autojump_clock: trio.abc.Clock) -> None:
    async def with_inner_nursery() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(crash_after, 4)

    service = Service()

    async def body(supervisor: Supervisor) -> None:
        supervisor.start_soon("pool", with_inner_nursery)

    with pytest.raises(ActorCrashed) as info:
        await service.run(body)
    assert trio.current_time() == 4
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert service.states() == {"pool": ActorState.CRASHED}
