"""Waiting for a condition, always with a deadline: the one place tests poll from.

A test must never sleep for a fixed time and hope, nor wait without bound: it polls a condition
and fails after ``timeout`` seconds, so a regression shows as a clear failure instead of a hung
run. ``timeout`` is required on purpose.

- :func:`wait_until` is for trio code: it polls an async condition (an HTTP call, a store read)
  on trio's clock and raises ``trio.TooSlowError`` at the deadline.
- :func:`wait_for` is for plain threads (the end-to-end tests, which drive a service process):
  it polls a sync condition on the monotonic clock and raises ``AssertionError`` at the deadline.

Both return the condition's first truthy value, so a test can wait for a result and use it.
Actor tests whose predicate is a plain bool use ``actors.testing.wait_until``, which is built on
the same rule.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import trio

T = TypeVar("T")


# The timeout parameter (ASYNC109) is the point: it is required, so no test can wait forever.
async def wait_until(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.05,
) -> T:
    """Await ``condition()`` every ``interval`` seconds until it returns something truthy.

    Raises ``trio.TooSlowError`` if nothing truthy came within ``timeout`` seconds of trio time.
    """
    with trio.fail_after(timeout):
        while True:
            value = await condition()
            if value:
                return value
            await trio.sleep(interval)


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``condition()`` every ``interval`` seconds until it returns something truthy.

    Raises ``AssertionError`` (naming ``what``) if nothing truthy came within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
