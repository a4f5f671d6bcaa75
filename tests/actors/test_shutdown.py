"""ShutdownTrigger and watch_signals, with real signals sent to this process."""

from __future__ import annotations

import functools
import logging
import os
import signal

import pytest
import trio
import trio.testing

from actors.shutdown import ShutdownTrigger, watch_signals
from actors.testing import wait_until


async def test_trigger_keeps_the_first_reason(autojump_clock: trio.abc.Clock) -> None:
    trigger = ShutdownTrigger()
    assert not trigger.is_set
    assert trigger.reason is None
    woke_at: list[float] = []

    async def waiter() -> None:
        await trigger.wait()
        woke_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(3)
        trigger.trigger("deploy")
        trigger.trigger("later")
    assert woke_at == [3]
    assert trigger.is_set
    assert trigger.reason == "deploy"
    await trigger.wait()  # already set: returns at once
    assert trio.current_time() == 3


async def test_first_signal_triggers_and_second_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="actors.shutdown")
    trigger = ShutdownTrigger()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, trigger)
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            await trigger.wait()
        assert trigger.reason == "signal SIGTERM"

        os.kill(os.getpid(), signal.SIGINT)  # still handled: no KeyboardInterrupt
        await wait_until(lambda: len(caplog.records) == 2, timeout=5, interval=0.001)
        nursery.cancel_scope.cancel()
    assert trigger.reason == "signal SIGTERM"
    assert [(r.levelno, r.getMessage(), r.signal) for r in caplog.records] == [  # type: ignore[attr-defined]
        (logging.INFO, "received SIGTERM, shutting down", "SIGTERM"),
        (
            logging.WARNING,
            "received SIGINT while already shutting down (signal SIGTERM); still shutting down",
            "SIGINT",
        ),
    ]


async def test_watches_only_the_given_signals() -> None:
    trigger = ShutdownTrigger()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(watch_signals, trigger, signals=[signal.SIGUSR1]))
        os.kill(os.getpid(), signal.SIGUSR1)
        with trio.fail_after(5):
            await trigger.wait()
        nursery.cancel_scope.cancel()
    assert trigger.reason == "signal SIGUSR1"
