"""``send_batch`` for backends whose provider takes one email per call: one ``send`` per email.

The results keep the batch's order and every ``SendError`` becomes that email's result, so one
refused address never hides what happened to the others. ``concurrently`` runs the sends as
tasks of one nursery: worth it where a send waits on a thread lane or the network (outbox, SES
single), pointless where it never waits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from sesender.backends.base import OutgoingEmail, SendResult
from sesender.errors import SendError


async def send_one_by_one(
    send: Callable[[OutgoingEmail], Awaitable[str]],
    emails: Sequence[OutgoingEmail],
    *,
    concurrently: bool = False,
) -> list[SendResult]:
    """Call ``send`` for each email; return its message id or its ``SendError``, in order."""
    results: list[SendResult] = [""] * len(emails)

    async def send_at(index: int) -> None:
        try:
            results[index] = await send(emails[index])
        except SendError as exc:
            results[index] = exc

    if concurrently and len(emails) > 1:
        async with trio.open_nursery() as nursery:
            for index in range(len(emails)):
                nursery.start_soon(send_at, index)
    else:
        for index in range(len(emails)):
            await send_at(index)
    return results
