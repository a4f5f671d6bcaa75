"""Helpers for tests that drive actors; part of the toolkit so every package's tests share them.

Tests must not sleep for a fixed real time and hope: they wait for a condition with a deadline
(:func:`wait_until`), which under trio's autojump clock costs no real time at all, and they read a
pipe to its end (:func:`collect`) to check what an actor emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

__all__ = ["collect", "wait_until"]

T = TypeVar("T")


# The timeout parameter (ASYNC109) is the point: it is required, so no test can wait forever.
async def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.01,
) -> None:
    """Return once ``predicate()`` is true, checking every ``interval`` seconds of trio time.

    Raises ``trio.TooSlowError`` if it is still false after ``timeout`` seconds. ``interval`` must
    be positive: with the autojump clock, time only moves while every task sleeps.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    with trio.fail_after(timeout):
        await trio.lowlevel.checkpoint()
        # Polling (ASYNC110) is deliberate: the predicate reads state that has no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(interval)


async def collect(receiver: trio.abc.ReceiveChannel[T]) -> list[T]:
    """Receive every item until the senders close, and return them in order."""
    return [item async for item in receiver]
