"""Send a batch one email at a time, for backends with no batch call of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sesender.backends.base import OutgoingEmail, SendResult
from sesender.errors import SendError

__all__ = ["send_each"]


async def send_each(
    send: Callable[[OutgoingEmail], Awaitable[str]], emails: Sequence[OutgoingEmail]
) -> list[SendResult]:
    """Call ``send`` for each email in order; a ``SendError`` becomes that email's result."""
    results: list[SendResult] = []
    for email in emails:
        try:
            results.append(await send(email))
        except SendError as error:
            results.append(error)
    return results
