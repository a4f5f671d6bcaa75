"""send_one_by_one: one send per email, results in order, failures as values."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sesender.backends.base import OutgoingEmail
from sesender.backends.one_by_one import send_one_by_one
from sesender.errors import PermanentSendError


def email(request_id: int) -> OutgoingEmail:
    return OutgoingEmail(
        request_id=request_id,
        topic_id="t",
        sender="news@example.com",
        recipient=f"u{request_id}@example.org",
        subject="s",
        html="<p>h</p>",
    )


@pytest.mark.parametrize("concurrently", [False, True])
async def test_results_keep_the_batch_order_and_failures_are_values(
    autojump_clock: trio.testing.MockClock, concurrently: bool
) -> None:
    async def send(outgoing: OutgoingEmail) -> str:
        # Later emails answer sooner: order must come from the batch, not from completion.
        await trio.sleep(10 - outgoing.request_id)
        if outgoing.request_id == 2:
            raise PermanentSendError("refused", code="MessageRejected")
        return f"id-{outgoing.request_id}"

    results = await send_one_by_one(send, [email(1), email(2), email(3)], concurrently=concurrently)
    assert results[0] == "id-1"
    assert isinstance(results[1], PermanentSendError)
    assert results[2] == "id-3"
    # Concurrently the call lasts as long as its slowest send; in a loop, as all of them.
    assert trio.current_time() == (9 if concurrently else 9 + 8 + 7)


async def test_an_error_that_is_not_a_send_error_is_not_swallowed() -> None:
    async def send(outgoing: OutgoingEmail) -> str:
        raise RuntimeError("a defect")

    with pytest.raises(RuntimeError):
        await send_one_by_one(send, [email(1)])
