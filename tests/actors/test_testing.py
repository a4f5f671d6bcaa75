"""The test helpers themselves: wait_until's deadline and interval, collect's order."""

from __future__ import annotations

import pytest
import trio

from actors.channels import open_pipe
from actors.testing import collect, wait_until


async def test_wait_until_returns_on_the_first_check_after_the_change(
    autojump_clock: trio.abc.Clock,
) -> None:
    flag = False

    async def flip() -> None:
        nonlocal flag
        await trio.sleep(0.6)
        flag = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flip)
        await wait_until(lambda: flag, timeout=2, interval=0.25)
        assert trio.current_time() == 0.75


async def test_wait_until_true_at_once_is_still_a_checkpoint(
    autojump_clock: trio.abc.Clock,
) -> None:
    await wait_until(lambda: True, timeout=1)
    assert trio.current_time() == 0
    with trio.CancelScope() as scope:
        scope.cancel()
        await wait_until(lambda: True, timeout=1)
    assert scope.cancelled_caught


async def test_wait_until_fails_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(trio.TooSlowError):
        await wait_until(lambda: False, timeout=3, interval=0.5)
    assert trio.current_time() == 3


@pytest.mark.parametrize("interval", [0, -1])
async def test_wait_until_needs_a_positive_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        await wait_until(lambda: True, timeout=1, interval=interval)


async def test_collect_reads_to_the_end_in_order() -> None:
    tx, rx = open_pipe[int]("numbers", 5)
    async with tx:
        for number in (3, 1, 2):
            tx.send_nowait(number)
    assert await collect(rx) == [3, 1, 2]
    assert await collect(rx) == []
